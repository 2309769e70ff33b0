"""A test-set submission file from an evaluation's predictions.csv (hidden-label test splits).

    vov3d-train --config configs/ssv2.json --eval-only --set data.eval_files='data/ssv2/test-*'
    vov3d-submission runs/ssv2/eval/predictions.csv --output submission.csv \\
        --ids /data/ssv2/test.json [--answers /data/ssv2/test-answers.csv]

Writes one line per video, `{video id};{predicted class name}`, no header: the `id;class` form
of Something-Something's own annotation files (`something-something-v1-*.csv`, and the
`test-answers.csv` published for the v2 test set; class names are the ones of the dataset's
labels file, for v2 the template without brackets). The official leaderboard's upload format
could not be checked (its site is gone): this is the assumed form, see docs/training.md.

`--ids` (the official test list: SSv2 `test.json`, SSv1 `something-something-v1-test.csv`, or
any file of `id` / `id;...` lines) checks that every test video was predicted once and orders the
lines like it: videos missing from the predictions (skipped as undecodable at build time) are an
error naming them, unless `--allow-missing`. `--answers` (an `id;class` file) also reports
top-1/top-5 of the predictions against it.
"""
import argparse
import csv
import io
import json
import sys

from vov3d_tf import fileio

MAX_REPORTED = 10


def read_predictions(path):
    """{video id: [class names, best first]} from a predictions.csv (evaluation's columns
    video_id, ..., label_1, label_2, ...); errors name the file and line."""
    with io.StringIO(fileio.read_text(path), newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        ranks = sorted(int(c[6:]) for c in fields if c.startswith("label_") and c[6:].isdigit())
        if "video_id" not in fields or not ranks:
            raise ValueError(f"{path}: not a predictions.csv (needs columns video_id, label_1, "
                             f"...; got {fields})")
        out = {}
        for row in reader:
            vid = row["video_id"]
            if vid in out:
                raise ValueError(f"{path}: line {reader.line_num}: video id {vid!r} appears twice")
            out[vid] = [row[f"label_{r}"] for r in ranks]
    if not out:
        raise ValueError(f"{path}: no predictions")
    return out


def read_ids(path):
    """Video ids, in file order, of an official test list: a JSON list of {"id": ...} (SSv2
    test.json) or text lines `id` / `id;...` (SSv1 test csv, test-answers.csv)."""
    text = fileio.read_text(path)
    if path.endswith(".json"):
        try:
            return [str(e["id"]) for e in json.loads(text)]
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f"{path}: expected a JSON list of {{\"id\": ...}}: {e}") from None
    return [line.split(";", 1)[0].strip() for line in text.splitlines() if line.strip()]


def read_answers(path):
    """{video id: class name} of an `id;class` file (e.g. test-answers.csv)."""
    answers = {}
    for n, line in enumerate(fileio.read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        vid, sep, label = line.partition(";")
        if not sep:
            raise ValueError(f"{path}: line {n}: expected 'id;class', got {line.strip()!r}")
        answers[vid.strip()] = label.strip()
    return answers


def _listed(ids):
    shown = ", ".join(ids[:MAX_REPORTED])
    return shown + (f" (and {len(ids) - MAX_REPORTED} more)" if len(ids) > MAX_REPORTED else "")


def make_submission(predictions_csv, output, *, ids=None, allow_missing=False):
    """Writes the submission file; returns {"videos": lines written, "missing": [ids]}."""
    predictions = read_predictions(predictions_csv)
    order, missing = list(predictions), []
    if ids is not None:
        official = read_ids(ids)
        extra = sorted(set(predictions) - set(official))
        if extra:
            raise ValueError(f"{predictions_csv}: {len(extra)} predicted video(s) not in {ids}: "
                             f"{_listed(extra)}")
        missing = [v for v in official if v not in predictions]
        if missing and not allow_missing:
            raise ValueError(f"{predictions_csv}: {len(missing)} of the {len(official)} test "
                             f"videos of {ids} have no prediction (skipped at build time? see "
                             f"the manifest's skipped list): {_listed(missing)}; "
                             f"--allow-missing writes the others")
        order = [v for v in official if v in predictions]
    text = "".join(f"{v};{predictions[v][0]}\n" for v in order)
    fileio.atomic_write_text(output, text)
    return {"videos": len(order), "missing": missing}


def score(predictions_csv, answers_path):
    """top-1/top-5 of a predictions.csv against an `id;class` answers file."""
    predictions, answers = read_predictions(predictions_csv), read_answers(answers_path)
    unknown = sorted(set(predictions) - set(answers))
    if unknown:
        raise ValueError(f"{answers_path}: no answer for {len(unknown)} predicted video(s): "
                         f"{_listed(unknown)}")
    n = len(predictions)
    return {"videos": n,
            "top1": sum(p[0] == answers[v] for v, p in predictions.items()) / n,
            "top5": sum(answers[v] in p[:5] for v, p in predictions.items()) / n}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="vov3d-submission",
                                     description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n")[1:]))
    parser.add_argument("predictions", help="predictions.csv of an evaluation")
    parser.add_argument("--output", required=True, help="submission file to write")
    parser.add_argument("--ids", help="official test list (test.json / *-test.csv): check and "
                                      "order by it")
    parser.add_argument("--allow-missing", action="store_true",
                        help="with --ids: write the predicted videos even if some are missing")
    parser.add_argument("--answers", help="`id;class` answers (test-answers.csv): report "
                                          "top-1/top-5")
    args = parser.parse_args(argv)
    for flag, path in (("predictions", args.predictions), ("--ids", args.ids),
                       ("--answers", args.answers)):
        if path is not None and not fileio.exists(path):
            print(f"error: {flag}: {path!r} not found", file=sys.stderr)
            return 2
    try:
        summary = make_submission(args.predictions, args.output, ids=args.ids,
                                  allow_missing=args.allow_missing)
        if args.answers:
            summary["answers"] = score(args.predictions, args.answers)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary["missing"] = len(summary["missing"])
    print(json.dumps({"output": args.output, **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
