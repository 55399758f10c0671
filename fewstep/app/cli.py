"""The ``fewstep`` command line: ``serve``, ``run``, ``nodes``, ``bench <what>``, ``eval``.

``fewstep bench <what>`` and ``fewstep eval`` run a command ``fn(argv) -> exit code`` found by its name
(``"bench sampling"``, ``"eval"``): first in the entry-point group ``fewstep.commands`` (the built-in
experiments under ``fewstep.bench`` register there in pyproject.toml; any distribution may add its own), loaded
only when named; else among the ``cli_commands()`` of node packs (external packs, e.g. from custom_nodes/).
The engine imports neither: both are found at run time.

Exit codes of ``fewstep run``: 0 success (each output file path printed on stdout), 1 a node failed at
run time (the node is named), 2 the graph or the command line is invalid (node errors printed), 130
interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fewstep import shipped_dir
from fewstep.app.config import Config
from fewstep.app.jsonlimits import MAX_JSON_DEPTH, too_deep

if TYPE_CHECKING:  # annotations only: each command imports the engine parts it uses when it runs
    from fewstep.app.api import Input, Paths
    from fewstep.app.registry import Registry

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130
# Entry points named like "bench.sampling" (dots: entry-point names should match [\w.-]+) serve the
# command "bench sampling"; each is fn(argv) -> int.
COMMANDS_GROUP = "fewstep.commands"


class UsageError(ValueError):
    """Bad command-line input (exit 2)."""


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", type=Path, default=None,
                        help="base folder of input/, output/, temp/, user/ (the queue database) and, unless "
                             "--models-dir is given, models/ (trainer checkpoints go to models/checkpoints/); "
                             "default: $FEWSTEP_HOME, else the current folder")
    parser.add_argument("--models-dir", type=Path, action="append", default=[],
                        help="models folder in ComfyUI's layout (repeatable); default: $FEWSTEP_MODELS_DIRS "
                             f"(folders separated by {os.pathsep!r}), else HOME/models")
    parser.add_argument("--custom-nodes", type=Path, action="append", default=[],
                        help="custom_nodes folder of external node packs (repeatable); default: HOME/custom_nodes "
                             "when it exists")
    parser.add_argument("--cache", default=None,
                        help="output cache: none | run | lru:N | ram:GB | vram:GB (default: lru:64 for serve, "
                             "run for run)")
    parser.add_argument("--no-builtin-nodes", action="store_true",
                        help="load only external packs (default: built-in packs too)")


def _device_list(text: str) -> tuple[str, ...]:
    """``--gpus 0,1`` -> ("0", "1")."""
    devices = tuple(part.strip() for part in text.split(","))
    if not all(d.isdigit() for d in devices) or len(set(devices)) != len(devices):
        raise argparse.ArgumentTypeError(f"{text!r}: distinct CUDA device numbers separated by commas, e.g. 0,1")
    return devices


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fewstep", description="Few-step generation node-graph studio.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the web app")
    _common(serve)
    serve.add_argument("--host", default=None,
                       help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for all)")
    serve.add_argument("--port", type=int, default=None, help="port to listen on (default: 8188, as ComfyUI)")
    serve.add_argument("--auth-token", default=None,
                       help="require this bearer token on every request (default: $FEWSTEP_AUTH_TOKEN, else none)")
    serve.add_argument("--cors-origin", default=None,
                       help="an Origin allowed cross-site, '*' for any (default: same origin only)")
    serve.add_argument("--device", default=None, help="torch device: auto | cpu | cuda | cuda:N (default: auto)")
    serve.add_argument("--worker", choices=("process", "thread"), default=None,
                       help="where jobs run: process (default; /interrupt can end any job by restarting it) or "
                            "thread (inside the server's process)")
    serve.add_argument("--interrupt-grace", type=float, default=None, dest="interrupt_grace_s", metavar="SECONDS",
                       help="process worker: how long an interrupted job may keep running before its process is "
                            "restarted (default: 5)")
    serve.add_argument("--workers", type=int, default=None, metavar="N",
                       help="worker processes claiming jobs from the queue, each with its own model cache "
                            "(default: 1)")
    serve.add_argument("--gpus", type=_device_list, default=None, metavar="0,1",
                       help="one worker process per CUDA device, each pinned to its device "
                            "(CUDA_VISIBLE_DEVICES)")
    serve.add_argument("--queue", default=None, dest="queue_url", metavar="URL",
                       help="the queue and history: postgresql://USER@HOST:PORT/DB shares one queue between "
                            "several servers (needs fewstep[postgres]); default: $FEWSTEP_QUEUE_URL, else "
                            "SQLite under HOME/user")
    serve.add_argument("--lease", type=float, default=None, dest="lease_s", metavar="SECONDS",
                       help="how long a worker's claim on a running job lasts without its heartbeat; a worker "
                            "killed mid-job has its job recorded as failed after this (default: 30)")
    run = sub.add_parser("run", help="run a graph headlessly (API or UI format)")
    _common(run)
    run.add_argument("graph", type=Path, help="graph file in API or editor (UI) format; a shipped template's "
                                               "name (graphs/default.json) works from any folder")
    run.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                     help="override one input value before running (repeatable), e.g. 23.noise_seed=7")
    run.add_argument("--out", type=Path, default=None, help="output folder (default HOME/output)")
    run.add_argument("--target", action="append", default=None, help="only produce this node (repeatable)")
    run.add_argument("--nproc", type=int, default=1,
                     help="run the graph in N processes under torch's elastic launcher (torchrun), one per GPU "
                          "(gloo on CPU): trainer nodes train data-parallel at the same global batch, rank 0 "
                          "reports, checkpoints and writes the outputs (default: 1)")
    run.add_argument("--shard", choices=("auto", "ddp", "fsdp"), default=None,
                     help="with --nproc: how trainers split the student - ddp (every process holds all of it), "
                          "fsdp (FSDP2: parameters, gradients and optimizer state sharded over the processes) "
                          "or auto (fsdp from 1.5 B trainable parameters); sets FEWSTEP_SHARD (default: auto)")
    nodes = sub.add_parser("nodes", help="list node packs, their nodes and load failures")
    _common(nodes)
    nodes.add_argument("--json", action="store_true", help="print packs, nodes and failures as JSON")
    nodes.add_argument("--verbose", "-v", action="store_true", help="also list node names")
    bench = sub.add_parser("bench", help="benchmarks and tables (`fewstep bench` lists them)")
    bench.add_argument("what", nargs="?", default="list", help="which benchmark (default: list them all)")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own options")
    evaluate = sub.add_parser("eval", help="evaluation grid of samplers x steps x guidance")
    evaluate.add_argument("rest", nargs=argparse.REMAINDER, help="its own options (`fewstep eval --help`)")
    return parser


def make_config(args: argparse.Namespace) -> Config:
    config = Config()
    if args.home is not None:
        config.home = args.home
    config.model_roots = list(args.models_dir)
    config.custom_nodes_dirs = list(args.custom_nodes) or (
        [config.home / "custom_nodes"] if (config.home / "custom_nodes").is_dir() else [])
    if args.cache:
        config.cache = args.cache
    config.builtin_nodes = not getattr(args, "no_builtin_nodes", False)
    for name in ("host", "port", "auth_token", "cors_origin", "device", "worker", "interrupt_grace_s", "workers",
                 "gpus", "queue_url", "lease_s"):
        if getattr(args, name, None) is not None:
            setattr(config, name, getattr(args, name))
    return config


# ---------------------------------------------------------------------------------------------
# fewstep run
# ---------------------------------------------------------------------------------------------


def parse_set_value(port: Input, text: str, where: str) -> Any:
    """A ``--set`` value typed by the input's schema; UsageError names the node and input."""
    kind = port.type
    try:
        if kind == "INT":
            return int(text)
        if kind == "FLOAT":
            return float(text)
        if kind == "BOOLEAN":
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError("expected true or false")
            return lowered in ("true", "1", "yes")
        if kind == "STRING":
            return text
        if kind == "COMBO":
            for choice in port.resolved_choices():
                if str(choice) == text:
                    return choice
            # every choice: a list cut short hid the sampler the user meant (20 of 24 shown)
            raise ValueError(f"not one of: {', '.join(map(str, port.resolved_choices()))}")
    except ValueError as exc:
        raise UsageError(f"--set {where}={text}: {kind} expected ({exc})") from None
    raise UsageError(f"--set {where}: input is a linked {kind} input, not a value; connect it in the graph")


def apply_sets(prompt: dict[str, Any], sets: Sequence[str], registry: Registry) -> None:
    """Apply ``NODE.INPUT=VALUE`` overrides in place (node ids may contain dots: split at the last one)."""
    for item in sets:
        target, sep, text = item.partition("=")
        node_id, dot, input_name = target.rpartition(".")
        if not sep or not dot:
            raise UsageError(f"--set {item!r}: expected NODE.INPUT=VALUE")
        node = prompt.get(node_id)
        if not isinstance(node, dict):
            raise UsageError(f"--set {item!r}: no node {node_id!r} in the graph")
        node_def = registry.get(node.get("class_type", ""))
        port = node_def.schema.input(input_name) if node_def is not None else None
        if port is None:
            known = [p.name for p in node_def.schema.inputs] if node_def is not None else []
            raise UsageError(f"--set {item!r}: node {node_id} has no input {input_name!r} (inputs: {known})")
        node.setdefault("inputs", {})[input_name] = parse_set_value(port, text, target)


def resolve_graph_path(path: Path) -> Path:
    """``path`` itself when it exists; otherwise the shipped template of that name, so that
    ``fewstep run graphs/default.json`` (or ``default.json``) works from any folder once installed."""
    if path.exists() or path.is_absolute():
        return path
    parts = path.parts[1:] if path.parts[:1] == ("graphs",) else path.parts
    shipped = shipped_dir("graphs").joinpath(*parts) if parts else path
    return shipped if shipped.is_file() else path


def load_graph(path: Path, registry: Registry) -> tuple[dict[str, Any], dict[str, Any]]:
    """The API-format prompt and extra_data of a graph file in either format (see resolve_graph_path)."""
    path = resolve_graph_path(path)
    try:
        graph = json.loads(path.read_text())
        if too_deep(graph, MAX_JSON_DEPTH):   # deeper graphs fail later, raw, in recursive code
            raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
    except RecursionError:
        raise UsageError(f"cannot read graph {path}: nested too deeply") from None
    except (OSError, ValueError) as exc:   # ValueError: JSONDecodeError, UnicodeDecodeError, depth
        raise UsageError(f"cannot read graph {path}: {exc}") from None
    if isinstance(graph, dict) and isinstance(graph.get("prompt"), dict) and "class_type" not in graph["prompt"]:
        return graph["prompt"], dict(graph.get("extra_data") or {})  # a saved /prompt request body
    from fewstep.app import workflow  # another part of fewstep/app/; imported only when needed

    if workflow.is_ui_workflow(graph):
        try:
            return workflow.ui_to_api(graph, registry), {"extra_pnginfo": {"workflow": graph}}
        except workflow.WorkflowConversionError as exc:
            raise UsageError(f"cannot convert graph {path}: {exc}") from None
    return graph, {}


def output_files(outputs: dict[str, Any], paths: Paths) -> list[Path]:
    """Files named in UI outputs (``{"filename", "subfolder", "type"}`` items)."""
    roots = {"output": paths.output_dir, "temp": paths.temp_dir, "input": paths.input_dir}
    files = []
    for ui in outputs.values():
        for items in (ui or {}).values():
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and "filename" in item:
                    root = roots.get(item.get("type", "output"), paths.output_dir)
                    files.append((Path(root) / item.get("subfolder", "") / item["filename"]).resolve())
    return files


def print_node_errors(error: dict[str, Any] | None, node_errors: dict[str, Any]) -> None:
    if error:
        _err(f"invalid graph: {error.get('message')}" + (f" ({error['details']})" if error.get("details") else ""))
    for node_id, entry in node_errors.items():
        for item in entry["errors"]:
            _err(f"  node {node_id} ({entry.get('class_type')}): {item['message']}: {item.get('details', '')}")


def _terminal_progress(prompt: dict[str, Any]) -> Any:
    """A progress line on stderr when it is a terminal (node, step, loss ...); None otherwise, so logs and
    pipes get only the output paths and errors."""
    if not sys.stderr.isatty():
        return None
    from fewstep.app.terminal import TerminalProgress

    return TerminalProgress(sys.stderr, {k: str(v.get("class_type")) for k, v in prompt.items() if isinstance(v, dict)})


def cmd_run(args: argparse.Namespace) -> int:
    from fewstep.app import launch
    from fewstep.app.cpu_threads import set_threads_for_load

    if args.shard is not None:
        os.environ["FEWSTEP_SHARD"] = args.shard     # read by the trainers (nodes.core.train.sharded); workers inherit it
    if args.nproc != 1 and not launch.in_worker():
        return _launch_run(args)
    launch.prepare_worker()
    set_threads_for_load()       # the free cores: 2 threads on a busy 2-core machine ran 6-17x slower
    config = make_config(args)
    paths = config.paths()
    with launch.rank_output_dir(args.out if args.out is not None else paths.output_dir) as out:
        code = 1
        try:
            code = _run_graph(args, config, replace(paths, output_dir=out))
        finally:
            launch.leave_process_group(wait_for_peers=code == 0)
    if launch.in_worker():
        launch.exit_worker(code)
    return code


def _launch_run(args: argparse.Namespace) -> int:
    """``--nproc N``: N workers, each running this same command (see ``fewstep.app.launch``)."""
    from fewstep.app import launch

    run_parser = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["run"]
    argv = ["-m", "fewstep.app.cli", "run", *launch.run_argv(run_parser, args, drop=["nproc"])]
    try:
        launch.launch(args.nproc, argv)
    except ValueError as exc:
        _err(f"error: {exc}")
        return EXIT_INVALID
    except launch.LaunchFailed as exc:
        _err(f"error: {exc}")
        return EXIT_FAILED
    return EXIT_OK


def _run_graph(args: argparse.Namespace, config: Config, paths: Paths) -> int:
    from fewstep.app import launch
    from fewstep.app.api import use_paths
    from fewstep.app.cache import CacheSet
    from fewstep.app.executor import Executor
    from fewstep.app.registry import load_registry
    from fewstep.app.validation import validate_prompt

    with use_paths(paths):  # packs may read folder_paths while they import
        registry = load_registry(config.custom_nodes_dirs, builtin=not args.no_builtin_nodes)
    for failure in registry.failures:
        _err(f"warning: node pack {failure.pack}: {failure.reason}")
    executor = Executor(registry, CacheSet(config.cache if args.cache else "run"), paths)
    # COMBO choices (model file lists) are read while converting a UI workflow, typing --set values and
    # validating: all three must list the folders given (--home, --models-dir), as the executor does;
    # outside this block they are the defaults (./models), which rejected DIR's files.
    with use_paths(paths):
        try:
            prompt, extra_data = load_graph(args.graph, registry)
            apply_sets(prompt, args.set, registry)
        except (UsageError, ValueError) as exc:
            _err(f"error: {exc}")
            return EXIT_INVALID
        validation = validate_prompt(prompt, registry, args.target)
    if not validation.ok:
        print_node_errors(validation.error, validation.node_errors)
        return EXIT_INVALID
    executor.remember(prompt, args.target, validation, registry)  # execute() skips validating again
    progress = _terminal_progress(prompt) if launch.worker_rank() == 0 else None
    result = executor.execute(prompt, prompt_id=str(uuid.uuid4()), extra_data=extra_data, targets=args.target,
                              **({"emit": progress} if progress is not None else {}))
    if progress is not None:
        progress.close()
    if result.status == "interrupted":
        _err("interrupted")
        return EXIT_INTERRUPTED
    if result.status != "success":
        error = result.error or {}
        if "node_errors" in error:
            print_node_errors(error, error["node_errors"])
            return EXIT_INVALID
        _err(f"error: node {error.get('node_id')} ({error.get('node_type')}) failed: "
             f"{error.get('exception_type')}: {error.get('exception_message')}")
        return EXIT_FAILED
    if launch.worker_rank() == 0:                 # the other ranks' outputs went to a temp folder
        for path in output_files(result.outputs, paths):
            _out(str(path))
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# fewstep nodes / bench / eval / serve
# ---------------------------------------------------------------------------------------------


def cmd_nodes(args: argparse.Namespace) -> int:
    from fewstep.app.api import use_paths
    from fewstep.app.registry import load_registry

    config = make_config(args)
    with use_paths(config.paths()):  # packs may read folder_paths while they import
        registry = load_registry(config.custom_nodes_dirs, builtin=not args.no_builtin_nodes)
    if args.json:
        _out(json.dumps({"packs": [{"name": p.name, "source": p.source, "nodes": p.node_names}
                                   for p in registry.packs],
                         "failures": [{"pack": f.pack, "reason": f.reason} for f in registry.failures]}, indent=2))
        return EXIT_OK
    _out(f"{'pack':<28} {'source':<13} nodes")
    for pack in registry.packs:
        _out(f"{pack.name:<28} {pack.source:<13} {len(pack.node_names)}")
        if args.verbose:
            for name in pack.node_names:
                _out(f"    {name}")
    _out(f"{len(registry.all())} nodes in {len(registry.packs)} packs")
    if registry.failures:
        _out("failures:")
        for failure in registry.failures:
            _out(f"  {failure.pack}: {failure.reason}")
    return EXIT_OK


def entry_point_commands() -> dict[str, Any]:
    """The ``fewstep.commands`` entry points by command name (``"bench.distill"`` serves ``"bench distill"``),
    not loaded yet."""
    import importlib.metadata

    return {ep.name.replace(".", " "): ep for ep in importlib.metadata.entry_points(group=COMMANDS_GROUP)}


def run_command(key: str, rest: list[str]) -> int:
    """Run command ``key`` (``"eval"``, ``"bench <what>"``) with its own arguments ``rest``; exit code."""
    if key in ("bench", "bench list"):
        return list_commands()
    entry = entry_point_commands().get(key)
    if entry is not None:
        return int(entry.load()(rest) or 0)
    _err(f"'fewstep {key}' is not a built-in command; looking in the node packs' commands...")
    commands = _pack_commands()
    if key in commands:
        return int(commands[key](rest) or 0)
    available = sorted({*entry_point_commands(), *commands})
    _err(f"unknown command 'fewstep {key}'; available: {', '.join(available)}")
    return EXIT_INVALID


def _pack_commands() -> dict[str, Callable[[list[str]], int]]:
    from fewstep.app.registry import load_registry

    return load_registry().commands()


def list_commands() -> int:
    """Print the built-in commands at once (entry points: nothing imported), then the node packs' own
    commands, which need the packs imported (seconds)."""
    builtin = entry_point_commands()
    _out("\n".join(f"fewstep {name}" for name in sorted(builtin)))
    sys.stdout.flush()
    extra = sorted(set(_pack_commands()) - set(builtin))
    if extra:
        _out("from node packs:\n" + "\n".join(f"fewstep {name}" for name in extra))
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    return run_command(f"bench {args.what}", list(args.rest))


def cmd_serve(args: argparse.Namespace) -> int:
    from fewstep.app import server  # written by the server part of the app; imported only here

    server.run_server(make_config(args))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fewstep`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Pack commands own their options: hand everything after the command name over untouched
    # (argparse's REMAINDER refuses a leading option such as `fewstep eval --n 32`).
    if argv[:1] == ["eval"]:
        return run_command("eval", argv[1:])
    if argv[:1] == ["bench"] and len(argv) > 1 and not argv[1].startswith("-"):
        return run_command(f"bench {argv[1]}", argv[2:])
    if argv == ["bench"]:
        return list_commands()
    args = build_parser().parse_args(argv)
    handlers = {"serve": cmd_serve, "run": cmd_run, "nodes": cmd_nodes, "bench": cmd_bench,
                "eval": lambda a: run_command("eval", list(a.rest))}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
