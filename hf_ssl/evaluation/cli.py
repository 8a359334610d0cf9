"""`hf-ssl eval ...`: evaluations of a model, printed and (with `--out`) written as JSON.

    hf-ssl eval knn      --model M --dataset D [--k 10 20] [--cache-dir C]   weighted kNN top-1/top-5 (DINO protocol)
    hf-ssl eval linear   --model M --dataset D [--solver sgd|lbfgs]          linear probe top-1, without/with BatchNorm
    hf-ssl eval fewshot  --model M --dataset D [--shots 1 5 10]              kNN and logistic regression on n images/class
    hf-ssl eval rankme   --model M --dataset D [--split test]                label-free: RankMe, alpha-ReQ, embedding std
    hf-ssl eval finetune --model M --dataset D --output-dir O [--max-steps N] full fine-tuning with transformers.Trainer
"""

import json
from pathlib import Path


def _model_and_data(parser, batch_size: int = 256) -> None:
    parser.add_argument("--model", required=True, help="model folder or Hub id (anything AutoModel loads)")
    parser.add_argument(
        "--dataset", default="fashion_mnist", help="fashion_mnist, an image folder, a saved dataset or a Hub id"
    )
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--out", default=None, help="JSON file for the results")


def _features(parser, splits: bool = True) -> None:
    """Options of the evaluations on frozen features."""
    if splits:
        parser.add_argument("--train-split", default="train")
        parser.add_argument("--test-split", default="test")
        parser.add_argument("--max-train", type=int, default=None, help="use only the first N training images")
        parser.add_argument("--max-test", type=int, default=None, help="use only the first N test images")
    parser.add_argument("--random-init", action="store_true", help="evaluate the same architecture at random init")
    parser.add_argument(
        "--cache-dir", default=None, help="cache the features here as safetensors (key: model, dataset, split)"
    )


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="eval_command", metavar="EVALUATION", required=True)

    knn = sub.add_parser("knn", help="weighted kNN on frozen features (L2-normalised, cosine, exp(sim/T) votes)")
    _model_and_data(knn)
    _features(knn)
    knn.add_argument("--k", type=int, nargs="+", default=[20], help="one or more k (default 20)")
    knn.add_argument("--temperature", type=float, default=0.07)

    linear = sub.add_parser("linear", help="linear probe on frozen features, without and with BatchNorm (MAE)")
    _model_and_data(linear)
    _features(linear)
    linear.add_argument("--solver", choices=("sgd", "lbfgs"), default="sgd")
    linear.add_argument(
        "--sweep", type=float, nargs="+", default=None,
        help="learning rates (sgd; default 0.001 0.01 0.1 1 10) or L2 penalties (lbfgs; default 1e-6 1e-4 1e-2)",
    )  # fmt: skip
    linear.add_argument("--epochs", type=int, default=30, help="SGD epochs per run")
    linear.add_argument(
        "--val-fraction", type=float, default=0.1, help="training features held out to pick the sweep's best (0: test)"
    )
    linear.add_argument(
        "--batchnorm", choices=("both", "no", "yes"), default="both", help="BatchNorm(affine=False) before the probe"
    )

    fewshot = sub.add_parser("fewshot", help="kNN and logistic regression trained on 1/5/10 images per class")
    _model_and_data(fewshot)
    _features(fewshot)
    fewshot.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10], help="labelled images per class")
    fewshot.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one draw of the images per seed")
    fewshot.add_argument("--k", type=int, default=20)
    fewshot.add_argument("--temperature", type=float, default=0.07)
    fewshot.add_argument("--l2", type=float, default=1e-3, help="L2 penalty of the logistic regression")

    rankme = sub.add_parser("rankme", help="label-free metrics: RankMe, alpha-ReQ, embedding std")
    _model_and_data(rankme)
    _features(rankme, splits=False)
    rankme.add_argument("--split", default="test")
    rankme.add_argument("--max-images", type=int, default=None, help="use only the first N images")

    finetune = sub.add_parser("finetune", help="full fine-tuning with transformers.Trainer")
    _model_and_data(finetune, batch_size=32)
    finetune.add_argument("--output-dir", required=True, help="where the fine-tuned model and processor are saved")
    finetune.add_argument("--train-split", default="train")
    finetune.add_argument("--test-split", default="test")
    finetune.add_argument("--max-train", type=int, default=None, help="use only the first N training images")
    finetune.add_argument("--max-test", type=int, default=None, help="use only the first N test images")
    finetune.add_argument("--epochs", type=float, default=3.0)
    finetune.add_argument("--max-steps", type=int, default=-1, help="stop after N optimizer steps (smoke runs)")
    finetune.add_argument("--lr", type=float, default=5e-4)
    finetune.add_argument("--weight-decay", type=float, default=0.05)
    finetune.add_argument("--layer-decay", type=float, default=None, help="layer-wise LR decay, e.g. 0.65 (ViTs)")
    finetune.add_argument("--warmup-steps", type=float, default=0.0, help="steps, or a fraction of them if < 1")
    finetune.add_argument("--no-augment", action="store_true", help="no random horizontal flip of training images")
    finetune.add_argument("--seed", type=int, default=0)


def _knn(args) -> dict:
    from .knn import knn_eval

    results = knn_eval(
        args.model, args.dataset, args.train_split, args.test_split, args.k, args.temperature, args.batch_size,
        args.max_train, args.max_test, args.random_init, args.cache_dir,
    )  # fmt: skip
    for name, scores in results.items():
        print(f"kNN {name}: top-1 {scores['top1']:.2f}  top-5 {scores['top5']:.2f}")
    return results


def _linear(args) -> dict:
    from .linear import linear_eval

    batchnorm = {"both": (False, True), "no": (False,), "yes": (True,)}[args.batchnorm]
    results = linear_eval(
        args.model, args.dataset, args.train_split, args.test_split, args.solver, batchnorm, args.sweep,
        args.val_fraction, args.epochs, args.batch_size, args.max_train, args.max_test, args.random_init,
        args.cache_dir,
    )  # fmt: skip
    for name, scores in results.items():
        chosen = "lr" if "lr" in scores else "l2"
        print(f"{name}: top-1 {scores['top1']:.2f}  ({chosen} {scores[chosen]:g})")
    return results


def _fewshot(args) -> dict:
    from .fewshot import fewshot_eval

    results = fewshot_eval(
        args.model, args.dataset, args.train_split, args.test_split, tuple(args.shots), tuple(args.seeds), args.k,
        args.temperature, args.l2, args.batch_size, args.max_train, args.max_test, args.random_init, args.cache_dir,
    )  # fmt: skip
    for name, scores in results.items():
        knn, linear = scores["knn"], scores["linear"]
        print(f"{name}: kNN top-1 {knn['mean']:.2f} ± {knn['std']:.2f}  linear top-1 {linear['mean']:.2f} ± "
              f"{linear['std']:.2f}  ({knn['runs']} seeds)")  # fmt: skip
    return results


def _rankme(args) -> dict:
    from .metrics import metrics_eval

    results = metrics_eval(
        args.model, args.dataset, args.split, args.max_images, args.batch_size, args.random_init, args.cache_dir
    )
    print(f"RankMe {results['rankme']:.2f} (of at most {results['max_rank']})")
    print(f"alpha-ReQ {results['alpha_req']:.3f}")
    print(f"embedding std {results['embedding_std']:.4f} (1/sqrt(D) = {results['uniform_std']:.4f})")
    return results


def _finetune(args) -> dict:
    from .finetune import finetune

    results = finetune(
        args.model, args.dataset, args.output_dir, train_split=args.train_split, test_split=args.test_split,
        epochs=args.epochs, max_steps=args.max_steps, lr=args.lr, batch_size=args.batch_size,
        weight_decay=args.weight_decay, layer_decay=args.layer_decay, warmup_steps=args.warmup_steps,
        max_train=args.max_train, max_test=args.max_test, augment=not args.no_augment, seed=args.seed,
    )  # fmt: skip
    print(f"train loss {results['train']['train_loss']:.4f}; model saved to {args.output_dir}")
    if "eval_accuracy" in results["eval"]:
        print(f"test top-1 {100 * results['eval']['eval_accuracy']:.2f}")
    return results


EVALUATIONS = {"knn": _knn, "linear": _linear, "fewshot": _fewshot, "rankme": _rankme, "finetune": _finetune}


def run(args) -> int:
    results = EVALUATIONS[args.eval_command](args)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    return 0
