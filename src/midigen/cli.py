"""`midigen` command line. Each subcommand imports only what it needs.

The producer's commands (`generate`, `tokenize`, `evaluate`) never import Lightning or
Hydra; `train` hands its arguments to the Hydra app in `midigen.train.app`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from midigen.data.corpus import DEFAULT_LIMIT, DEFAULT_PIECE_TIMEOUT
from midigen.errors import MidigenError, exit_status


def _cmd_data_build(args: argparse.Namespace) -> int:
    from midigen.data.corpus import DEFAULT_STYLES, build_corpus

    styles = args.styles.split(",") if args.styles else list(DEFAULT_STYLES)
    build_corpus(styles=styles, out=Path(args.out), limit=None if args.limit == "all" else int(args.limit),
                 jobs=args.jobs, piece_timeout=args.piece_timeout)
    return 0


def _limit(text: str) -> int | str:
    """--limit: a number of pieces, or all."""
    if text.strip().lower() == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of pieces per style, or all") from None


def _cmd_data_styles(args: argparse.Namespace) -> int:
    from midigen import tracking
    from midigen.data.corpus import print_styles

    root = Path(args.root) if args.root else Path("data/corpus")
    if not args.root and not root.is_dir():  # run outside the checkout: its corpus, named in full
        root = tracking.repo_root() / "data" / "corpus"
    print_styles(root)
    return 0


def _cmd_data_import(args: argparse.Namespace) -> int:
    from midigen.data.imports import import_folder

    import_folder(Path(args.folder), args.style, Path(args.root))
    return 0


def _cmd_tokenize(args: argparse.Namespace) -> int:
    import os

    from midigen.data.tokenizer import OoreTokenizer
    from midigen.data.events import EventParams
    from midigen.errors import first_line

    # --decode's target is checked before anything is read or printed: the round trip is lossy
    # (8 ms or grid steps, velocity 64, one track), so it never replaces the input, and replaces
    # another existing file only with --force.
    decode = Path(args.decode) if args.decode else None
    if decode is not None:
        source = Path(args.file)
        if decode.resolve() == source.resolve() or (decode.exists() and source.exists()
                                                    and os.path.samefile(decode, source)):
            raise MidigenError(f"--decode {decode}: that is the input file; the round trip is lossy, "
                               "write it to another file")
        if decode.is_dir():
            raise MidigenError(f"--decode {decode}: a folder; name a .mid file")
        if decode.exists() and not args.force:
            raise MidigenError(f"--decode {decode} exists; pass --force to replace it, or name another file")
        if not decode.parent.is_dir():
            raise MidigenError(f"--decode {decode}: no such folder {decode.parent}")
    params = EventParams.seed() if args.tokenizer == "seed" else EventParams.beat()
    tok = OoreTokenizer.from_params(params)
    ids = tok.encode_file(args.file)
    names = tok.event_names()
    events = [names[int(i)] for i in ids]
    if args.json:
        print(json.dumps({"vocab_size": len(tok), "ids": ids.tolist(), "events": events}))
    else:
        print("Index List:")
        print(ids.tolist())
        print("Event List:")
        print(events)
    if decode is not None:  # written beside the target, then renamed: never a half-written file
        part = decode.with_name(f".{decode.name}.{os.getpid()}.part")
        try:
            tok.decode(ids, output_path=part)
            os.replace(part, decode)
        except (OSError, RuntimeError) as exc:  # symusic raises RuntimeError when it cannot write
            raise MidigenError(f"--decode {decode}: cannot write it ({first_line(exc) or type(exc).__name__})") \
                from None
        finally:
            part.unlink(missing_ok=True)
        print(f"wrote {decode}", file=sys.stderr)
    return 0


def _cmd_train(args: argparse.Namespace, rest: list[str]) -> int:
    from midigen.train.app import run_cli

    return run_cli(rest)


def _cmd_finetune(args: argparse.Namespace) -> int:
    from midigen.train.app import run_cli
    from midigen.train.finetune import prepare_command

    return run_cli(prepare_command(args))


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from midigen.evaluation.evaluate import evaluate_command

    if args.style_of:  # a registry URI or folder -> the classifier file in its bundle
        from midigen.producer.bundle import STYLE_CLASSIFIER, find_bundle_dir
        from midigen.producer.registry import resolve_model

        folder = find_bundle_dir(resolve_model(args.style_of))
        args.style_classifier = folder / STYLE_CLASSIFIER
        if not args.style_classifier.exists():
            raise MidigenError(f"{args.style_of}: this model carries no style classifier (trained before "
                               "midigen shipped one, or on a single style); retrain it to use --style-of")
    return evaluate_command(args)


def _cmd_generate(args: argparse.Namespace) -> int:
    from midigen.producer.generate import generate_command

    return generate_command(args)


def _cmd_interpolate(args: argparse.Namespace) -> int:
    from midigen.producer.interpolate import interpolate_command

    return interpolate_command(args)


def _cmd_studio(args: argparse.Namespace) -> int:
    from midigen.producer.studio import studio_command

    return studio_command(args)


def _cmd_models_pull(args: argparse.Namespace) -> int:
    from midigen.producer.registry import pull_model

    source = pull_model(args.uri, Path(args.out), force=args.force)
    what = "already there" if source.origin != "registry" else "pulled"
    print(f"{source.path}", flush=True)
    print(f"midigen: {what}: {source.describe()}", file=sys.stderr)
    return 0


def _cmd_models_cache(args: argparse.Namespace) -> int:
    from midigen.producer.registry import cache_dir, cached_models, clear_cache

    if args.cache_command == "clear":
        folders, size = clear_cache()
        print(f"removed {folders} cached models ({size / 1e6:.1f} MB) from {cache_dir()}")
        return 0
    entries = cached_models()
    if args.json:
        print(json.dumps({"cache": str(cache_dir()), "models": entries}))
        return 0
    print(f"{cache_dir()}: {len(entries)} cached models (MIDIGEN_CACHE moves it; `midigen models cache clear` empties it)")
    for e in entries:
        what = f"models:/{e['name']}/{e['version']}" if e["name"] else (f"run {e['run_id']}" if e["run_id"] else "?")
        print(f"  {what}  run {e['run_id'] or '?'}  {e['bytes'] / 1e6:.1f} MB  from {e['store'] or 'unknown store'}"
              f"  ({Path(e['path']).name})")
    return 0


def _cmd_models_calibrate(args: argparse.Namespace) -> int:
    from midigen.producer.bundle import load_bundle
    from midigen.producer.calibrate import (CALIBRATION_SEED, calibrate, parse_candidates, parse_strengths,
                                            write_settings)

    folder = Path(args.folder)
    if not (folder / "config.json").is_file():
        raise MidigenError(f"{folder}: not a model folder (no config.json); `midigen models pull URI` "
                           "downloads a registered model into one")
    bundle = load_bundle(folder)
    styles = [s.strip() for s in args.style.split(",") if s.strip()] if args.style else None
    candidates = None if args.keep_top_p else parse_candidates(args.candidates)
    strengths = [] if args.strengths.strip().lower() == "off" else parse_strengths(args.strengths)

    def cells(rows: dict, style: str) -> str:
        return ", ".join(f"{v:g}: good {r['good']:.2f} (heard as {style} {r['fidelity']:.2f}, usable {r['usable']:.2f})"
                         for v, r in rows.items())

    def progress(style: str, row: dict) -> None:
        print(f"{style}: --top-p {row['top_p']:g}  ({cells(row['candidates'], style)})", flush=True)
        if "style_strength" in row:
            print(f"{style}: --style-strength {row['style_strength']:g}  ({cells(row['strengths'], style)})", flush=True)
        if row.get("grid"):
            print(f"{style}: chosen jointly: --top-p {row['top_p']:g} --style-strength {row['style_strength']:g}  ("
                  + "; ".join(f"at {p:g}: {cells(srows, style)}" for p, srows in row["grid"].items()) + ")", flush=True)

    result = calibrate(bundle, styles, candidates, args.files, Path(args.work) if args.work else None,
                       CALIBRATION_SEED if args.seed is None else args.seed, progress, strengths, args.joint)
    if args.dry_run:
        print("midigen: --dry-run: the model folder is unchanged", file=sys.stderr)
        return 0
    write_settings(folder, result, args.files)
    print(f"midigen: wrote the settings into {folder / 'config.json'} and its card", file=sys.stderr)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from midigen.bench.runner import bench_command

    return bench_command(args)


def _cmd_kernels(args: argparse.Namespace) -> int:
    from midigen.producer import native

    if args.kernels_command == "status":
        built = native.load()
        print(f"native sampling kernels: {'built' if built else 'not built'} ({native.library_path()})")
        print(f"C++ compiler: {native.compiler() or 'none found'}")
        return 0 if built else 1
    path, seconds = native.build(force=args.force, verbose=args.verbose)
    print(f"built {path} in {seconds:.1f} s" if seconds else f"up to date: {path}")
    return 0


def _add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="your MIDI files (.mid/.midi, any layout); nothing in it is changed")
    parser.add_argument("--style", required=True, help="the new style's name (letters, digits, '-', '_'), one the "
                        "base model does not know; `--style NAME` generates it afterwards")
    parser.add_argument("--from", dest="base", default=None, metavar="MODEL",
                        help="the model to start from: models:/NAME@ALIAS, models:/NAME/VERSION, a model folder "
                             "(default: models:/midigen@champion, else the shipped model)")
    parser.add_argument("--register", default=None, metavar="NAME",
                        help="register the result as models:/NAME (a new version of NAME if it exists; "
                             "default: midigen-<style>); @champion moves to it")
    parser.add_argument("--corpus", default="data/corpus",
                        help="the corpus your files are imported into beside the base styles, whose training "
                             "files are replayed (default: data/corpus; `midigen data build` builds it)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="training time limit in minutes (default 6; the whole command stays within 10 "
                             "on a 2-core CPU)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the fine-tune (conf/experiment/"
                        "finetune.yaml), e.g. finetune.replay=0.5 optim.lr=0.001")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="midigen", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="build training corpora")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    build = data_sub.add_parser("build", help="export a corpus shipped inside music21 as MIDI, one folder per style")
    build.add_argument("--styles", default=None,
                       help="comma-separated style names, or all (`midigen data styles` lists them; default: every "
                            "style but classical)")
    build.add_argument("--out", default="data/corpus", help="corpus root (default: data/corpus)")
    build.add_argument("--limit", type=_limit, default=DEFAULT_LIMIT,
                       help=f"at most N pieces per style, the first N of each (default {DEFAULT_LIMIT}; all: every piece)")
    build.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    build.add_argument("--piece-timeout", type=float, default=DEFAULT_PIECE_TIMEOUT, metavar="SECONDS",
                       help=f"skip a piece that takes longer to export (default {DEFAULT_PIECE_TIMEOUT:g}; inf: no "
                            "limit); it is listed in skipped.csv and retried under a longer limit")
    build.set_defaults(func=_cmd_data_build)
    styles = data_sub.add_parser("styles", help="list the styles: description, pieces in music21, files built")
    styles.add_argument("--root", default=None, help="corpus root to count built files in (default: data/corpus "
                        "here, else the midigen checkout's)")
    styles.set_defaults(func=_cmd_data_styles)
    imp = data_sub.add_parser("import", help="add your own MIDI files (a folder, any layout) to a corpus as a style")
    imp.add_argument("folder", help="folder of .mid/.midi files, searched at any depth; nothing in it is changed")
    imp.add_argument("--style", required=True, help="the style's name: a new folder <root>/<style> (letters, digits, "
                     "'.', '_', '-'; not one of music21's styles); an imported style gets the new files")
    imp.add_argument("--root", default="data/corpus", help="corpus root (default: data/corpus)")
    imp.set_defaults(func=_cmd_data_import)

    tok = sub.add_parser("tokenize", help="print a MIDI file as events and ids (seed Figure 9)")
    tok.add_argument("file")
    tok.add_argument("--tokenizer", choices=["seed", "beat"], default="seed")
    tok.add_argument("--json", action="store_true", help='print {"vocab_size", "ids", "events"}')
    tok.add_argument("--decode", metavar="OUT.mid", help="write the tokens back to MIDI (never over the input)")
    tok.add_argument("--force", action="store_true", help="with --decode: replace OUT.mid if it exists")
    tok.set_defaults(func=_cmd_tokenize)

    train = sub.add_parser("train", help="train with Hydra overrides (midigen train experiment=smoke)", add_help=False)
    train.set_defaults(func=_cmd_train, passthrough=True)

    ft = sub.add_parser("finetune", help="teach a model your own MIDI folder as a new style, in minutes on a CPU")
    _add_finetune_arguments(ft)
    ft.set_defaults(func=_cmd_finetune)

    sub.add_parser("baselines", help="unigram / n-gram baselines: held-out NLL per event (--help for options)",
                   add_help=False)

    ev = sub.add_parser("evaluate", help="musical metrics of a folder of MIDI files")
    ev.add_argument("dir")
    ev.add_argument("--reference", help="folder of real MIDI files to compare distributions with")
    ev.add_argument("--against", metavar="MODEL", help="model whose training-corpus index measures copying")
    ev.add_argument("--style-of", metavar="MODEL", help="the style each file sounds like, by the model's style classifier")
    ev.add_argument("--expect", metavar="STYLE", help="with --style-of: the style the folder should be (its fidelity)")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=_cmd_evaluate)

    from midigen.producer.generate import add_generate_arguments

    gen = sub.add_parser("generate", help="write MIDI ideas from a trained model")
    add_generate_arguments(gen)
    gen.set_defaults(func=_cmd_generate)

    from midigen.producer.interpolate import add_interpolate_arguments

    inter = sub.add_parser("interpolate", help="clips that move from one MIDI clip to another")
    add_interpolate_arguments(inter)
    inter.set_defaults(func=_cmd_interpolate)

    from midigen.producer.studio import add_studio_arguments

    studio = sub.add_parser("studio", help="a page on 127.0.0.1 to generate, listen, continue, interpolate and keep ideas")
    add_studio_arguments(studio)
    studio.set_defaults(func=_cmd_studio)

    models = sub.add_parser("models", help="registered models")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    pull = models_sub.add_parser("pull", help="download a model for offline generation")
    pull.add_argument("uri", help="models:/NAME@ALIAS, models:/NAME/VERSION or runs:/ID/model")
    pull.add_argument("--out", default=".", help="folder to put the model folder in")
    pull.add_argument("--force", action="store_true",
                      help="replace a folder of the same name that holds another model (another run or store)")
    pull.set_defaults(func=_cmd_models_pull)
    cal = models_sub.add_parser("calibrate", help="choose each style's --top-p and --style-strength on generated "
                                                  "clips and store them in a model folder")
    cal.add_argument("folder", help="a model folder (models/pretrained, a run's bundle, one `models pull` wrote)")
    cal.add_argument("--style", help="the styles to calibrate, comma-separated (default: all the model knows)")
    cal.add_argument("--candidates", default="0.9,0.95,1", help="the nucleus masses to try (default 0.9,0.95,1)")
    cal.add_argument("--strengths", default="0,0.5,1,1.5,2",
                     help="the style strengths to try at the chosen mass, or off (default 0,0.5,1,1.5,2)")
    cal.add_argument("--joint", action="store_true",
                     help="try every strength at every mass and choose the pair (as many clips again per mass)")
    cal.add_argument("--keep-top-p", action="store_true",
                     help="keep the model's masses (and their measurements); choose the strengths alone")
    cal.add_argument("--files", type=int, default=64, help="8-bar clips per style and candidate, up to 128 (default 64)")
    cal.add_argument("--seed", type=int, help="the clips' seed (default: one apart from the seeds the studies "
                                              "judge files with)")
    cal.add_argument("--work", help="keep the clips in this folder (default: a temporary folder, removed after)")
    cal.add_argument("--dry-run", action="store_true", help="measure and print; leave the model folder unchanged")
    cal.set_defaults(func=_cmd_models_calibrate)
    cache = models_sub.add_parser("cache", help="the registry models downloaded for generation ($MIDIGEN_CACHE)")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    listing = cache_sub.add_parser("list", help="each cached model: name, version, run, store, size")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_cmd_models_cache)
    cache_sub.add_parser("clear", help="remove every cached model (they download again when used)") \
        .set_defaults(func=_cmd_models_cache)

    bench = sub.add_parser("bench", help="side-by-side benchmarks against the baselines")
    bench.add_argument("--quick", action="store_true", help="smaller sizes; the whole run in about 3 minutes")
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    bench.add_argument("--only", metavar="GROUPS", help="comma-separated row groups: tokenize,training,sampling,generate,memory,audio,studio")
    bench.set_defaults(func=_cmd_bench)

    kern = sub.add_parser("kernels", help="the native sampling kernels: build them for this machine, or check")
    kern_sub = kern.add_subparsers(dest="kernels_command", required=True)
    kbuild = kern_sub.add_parser("build", help="compile them with this machine's C++ compiler (make install runs it)")
    kbuild.add_argument("--force", action="store_true", help="rebuild even where built")
    kbuild.add_argument("--verbose", action="store_true", help="show the compiler's output")
    kbuild.set_defaults(func=_cmd_kernels)
    kern_sub.add_parser("status", help="built or not, where, and the compiler found (exit 1 if not built)") \
        .set_defaults(func=_cmd_kernels)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "baselines":  # its own argparse (python -m midigen.train.baselines)
        from midigen.train.baselines import main as baselines_main

        return baselines_main(argv[1:])
    if argv and argv[0] == "train":  # Hydra parses its own arguments
        return exit_status(_cmd_train, argparse.Namespace(), argv[1:])
    parser = build_parser()
    if argv and argv[0] == "finetune":  # Hydra overrides may come after the options, anywhere
        args, rest = parser.parse_known_args(argv)
        unknown = [a for a in rest if a.startswith("-")]
        if unknown:
            parser.parse_args(argv)  # argparse's own message and exit status for an unknown option
        args.overrides = [*args.overrides, *rest]
        return exit_status(args.func, args)
    args = parser.parse_args(argv)
    return _producer_status(args)


class Terminated(BaseException):
    """SIGTERM, raised where the command is so that its `finally` blocks clean up (staging folders)."""


def _producer_status(args: argparse.Namespace) -> int:
    """Run a producer command: its errors as one line (exit 2), Ctrl-C (130) and SIGTERM (143) as one
    line after its clean-up, a closed pipe (`midigen generate | head -1`) quietly."""
    import os
    import signal

    def terminate(signum, frame):  # noqa: ANN001, ARG001
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        return exit_status(args.func, args)
    except KeyboardInterrupt:
        print("midigen: interrupted; nothing half-written was left", file=sys.stderr)
        return 130
    except Terminated:
        print("midigen: terminated; nothing half-written was left", file=sys.stderr)
        return 143
    except BrokenPipeError:  # the reader went away: say nothing more on stdout
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
