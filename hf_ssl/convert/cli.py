"""`hf-ssl convert <method> --checkpoint FILE --out DIR`: an original research checkpoint -> an hf_ssl model folder."""

import argparse

from .originals import CONVERTERS, convert_to_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "methods and the files they read:\n" + "\n".join(
        f"  {name:<12} {', '.join(converter.files)}" for name, converter in CONVERTERS.items()
    )
    parser.add_argument("method", choices=list(CONVERTERS), metavar="METHOD", help="the method that made the file")
    parser.add_argument("--checkpoint", required=True, help="the original .pth / .pth.tar / .safetensors file")
    parser.add_argument("--out", required=True, help="output folder (written atomically)")
    parser.add_argument("--encoder", default=None,
                        help="which encoder of the file (default: the one the paper evaluates, e.g. the teacher)")
    parser.add_argument("--arch", default=None,
                        help="ViT architecture (vit_small, vit_base, ...): gives the number of heads, which files "
                             "do not store; inferred from the width when omitted")
    parser.add_argument("--num-heads", type=int, default=None, help="attention heads, for widths no --arch covers")
    parser.add_argument("--patch-size", type=int, default=None, help="expected patch size (checked against the file)")
    parser.add_argument("--encoder-only", action="store_true",
                        help="from a full training checkpoint, keep only the evaluated encoder (no heads)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.add_argument("--push", default=None, metavar="ORG/NAME", help="then upload the folder to the Hub")
    parser.add_argument("--private", action="store_true", help="with --push: create a private repository")


def format_report(report: dict) -> str:
    """A few lines: what was converted, what was left out and why."""
    lines = [
        f"converted {report['method']} {report['encoder']} ({report['source']}) -> {report['model_class']}: "
        f"{report['converted_tensors']} tensors",
    ]
    if report["created_tensors"]:
        lines.append(f"  created (not in the file): {', '.join(report['created_tensors'])}")
    for reason, keys in report["unused_tensors"].items():
        lines.append(f"  not converted, {reason}: {len(keys)} tensors ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
    if report["other_entries"]:
        lines.append(f"  other entries of the file, not converted: {', '.join(report['other_entries'])}")
    if report.get("pretraining"):
        lines.append(f"  {report['pretraining']}")
    if report["notes"]:
        lines.append(f"  note: {report['notes']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    conversion = convert_to_folder(
        args.method, args.checkpoint, args.out, overwrite=args.overwrite, encoder=args.encoder, arch=args.arch,
        num_heads=args.num_heads, patch_size=args.patch_size, encoder_only=args.encoder_only,
    )
    print(format_report(conversion.report))
    print(f"wrote {args.out}")
    if args.push:
        from .hub import push_to_hub

        url = push_to_hub(args.out, args.push, private=args.private)
        print(f"pushed to {url}")
    return 0
