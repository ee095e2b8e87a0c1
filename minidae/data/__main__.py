"""python -m minidae.data fetch mnist|fashion-mnist [--root DIR]: fetch and verify a data set ahead of time."""
import argparse
import sys
import time

from .datasets import DATASETS, DatasetUnavailable, data_root, fetch


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minidae.data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_parser = commands.add_parser("fetch", help="download (or copy) and verify a data set")
    fetch_parser.add_argument("dataset", choices=sorted(DATASETS))
    fetch_parser.add_argument("--root", default=None,
                              help=f"data root (default: $MINIDAE_DATA or {data_root()})")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        provenance = fetch(args.dataset, args.root)
    except DatasetUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc.filename or args.root}: {exc.strerror or exc}; choose a data directory you may write to "
              f"(--root)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the files verified so far are kept; no half file was left", file=sys.stderr)
        return 130
    for path, source in provenance.items():
        print(f"{path}: {source}")
    print(f"{args.dataset}: all files verified by SHA-256 ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
