"""The part of a docs page that a script generates, between two marker comments: find it, check it, rewrite it.

Shared by shapes_page.py and worked_example.py, which give the page, the markers and what belongs between them.
"""
import argparse
import sys


def page_parts(text, page, begin, end):
    """(text before the begin marker, the generated part, text after the end marker) of ``page``'s ``text``."""
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise SystemExit(f"{page}: expected one {begin} and, after it, one {end}")
    head, rest = text.split(begin, 1)
    body, tail = rest.split(end, 1)
    return head, body.strip("\n"), tail


def run(argv, description, page, begin, end, generated, script):
    """The command line of a generating script: print what it generates, ``--write`` it into the page, or
    ``--check`` that the page holds it (exit status 1 when stale)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--write", action="store_true", help=f"rewrite the generated part of {page.name}")
    what.add_argument("--check", action="store_true", help=f"exit 1 when {page.name} is not what this generates")
    args = parser.parse_args(argv)
    fresh = generated()
    if not (args.write or args.check):
        print(fresh)
        return 0
    head, body, tail = page_parts(page.read_text(), page, begin, end)
    if args.check:
        if body != fresh:
            print(f"{page} is stale: run python {script} --write", file=sys.stderr)
            return 1
        return 0
    page.write_text(head + begin + "\n" + fresh + "\n" + end + tail)
    return 0
