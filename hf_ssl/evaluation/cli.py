"""`hf-ssl eval knn`: weighted kNN top-1/top-5 of a model's features (DINO protocol), printed and written as JSON."""

import json
from pathlib import Path


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="eval_command", metavar="EVALUATION", required=True)
    knn = sub.add_parser("knn", help="weighted kNN on frozen features (L2-normalised, cosine, exp(sim/T) votes)")
    knn.add_argument("--model", required=True, help="model folder or Hub id (anything AutoModel loads)")
    knn.add_argument("--dataset", default="fashion_mnist", help="fashion_mnist, an image folder, a saved dataset or a Hub id")
    knn.add_argument("--train-split", default="train")
    knn.add_argument("--test-split", default="test")
    knn.add_argument("--k", type=int, nargs="+", default=[20], help="one or more k (default 20)")
    knn.add_argument("--temperature", type=float, default=0.07)
    knn.add_argument("--batch-size", type=int, default=256)
    knn.add_argument("--max-train", type=int, default=None, help="use only the first N training images")
    knn.add_argument("--max-test", type=int, default=None, help="use only the first N test images")
    knn.add_argument("--random-init", action="store_true", help="evaluate the same architecture at random init")
    knn.add_argument("--out", default=None, help="JSON file for the results")


def run(args) -> int:
    from .knn import knn_eval

    results = knn_eval(
        args.model,
        dataset=args.dataset,
        train_split=args.train_split,
        test_split=args.test_split,
        k=args.k,
        temperature=args.temperature,
        batch_size=args.batch_size,
        max_train=args.max_train,
        max_test=args.max_test,
        random_init=args.random_init,
    )
    for name, scores in results.items():
        print(f"kNN {name}: top-1 {scores['top1']:.2f}  top-5 {scores['top5']:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0
