"""Every command in README.md and docs/guide.md runs as written (issue 32).

The markdown is parsed here, so the docs stay the source of truth and an edited doc is
re-tested:

- every ```python block runs, in document order, in one namespace per section (the innermost
  heading above it), seeded by `setup_names` with the names the prose assumes (`model`,
  `data`, `model_b`, ...). Its test id is ``doc:line``, and a traceback points at the
  markdown line. Files it writes go to a temporary folder, one per section.
- every ``cipm ...`` command (a line of a ```bash block, or an inline code span starting
  with ``cipm ``) runs through `cipm.cli.main` in a temporary folder, after `FIXTURES` has
  made the input files it names; it must exit 0 and write the outputs it names. A file name
  no fixture makes is a failure that says so, never a skip.

What is not run is said in the markdown, by visible rules:

- ``<!-- not run: REASON -->`` on the line before a fenced block: its python is not run, and
  its commands are parsed (every verb and option must exist) and then skipped with REASON.
- a synopsis (an upper-case placeholder such as ``MODEL`` or ``FILE.onnx``, ``[...]``, ``|``
  or ``...``) and a bare verb name that needs arguments (``cipm prune`` in prose) are not
  commands: the verbs and options they name must exist in the parser.
- ``make ...`` lines (the demo and test targets) are out of scope; any other line of a bash
  block fails until this file learns to run it.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import shlex
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

import cipm
from cipm.cli import main
from cipm.examples import catalog

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local: no hub access

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/guide.md")
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(?P<reason>.+?)\s*-->$", re.DOTALL)
FENCE = re.compile(r"^```(?P<lang>\S*)\s*$")
HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*$")
SPAN = re.compile(r"`(?P<code>[^`]+)`")
PLACEHOLDER = re.compile(r"[A-Z]{2,}")  # MODEL, PATH, FILE.onnx, NAME=WEIGHT, ...

# Documented things that fail because of a bug in cipm: a command as written (its id's
# text), or one line of a python block (stripped), and why. Each runs as a strict xfail, so
# the fix shows up as an XPASS: then delete its entry. (The blocks after a failing one in
# its section fail too, saying which one they needed.) None at present.
KNOWN_BUGS: dict[str, str] = {}


# -- reading the markdown ------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    doc: str
    line: int  # of the first line inside the fence
    lang: str
    code: str
    section: str  # the innermost heading above the block, and its line
    not_run: str | None  # the reason of a `<!-- not run: ... -->` just before it

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    text: str  # as written, without a trailing shell comment
    not_run: str | None = None

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}:{self.text}"

    @property
    def argv(self) -> list[str]:
        words = shlex.split(self.text)
        assert words[0] == "cipm", self.text
        return words[1:]


def comment_before(lines: list[str], i: int) -> str:
    """The HTML comment (one or more lines) just before line i, or ""."""
    j = i - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    if j < 0 or not lines[j].rstrip().endswith("-->"):
        return ""
    start = next((k for k in range(j, -1, -1) if lines[k].lstrip().startswith("<!--")), j)
    return " ".join(line.strip() for line in lines[start : j + 1])


@functools.cache
def blocks(doc: str) -> tuple[Block, ...]:
    lines = (ROOT / doc).read_text(encoding="utf-8").splitlines()
    found, section, i = [], "", 0
    while i < len(lines):
        heading, fence = HEADING.match(lines[i]), FENCE.match(lines[i])
        if heading:
            section = f"{heading['title']} (line {i + 1})"
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        marker = NOT_RUN.match(comment_before(lines, i))
        code = "\n".join(lines[i + 1 : end]) + "\n"
        found.append(
            Block(doc, i + 2, fence["lang"], code, section, marker["reason"] if marker else None)
        )
        i = end + 1
    return tuple(found)


def prose(doc: str) -> str:
    """The doc with its fenced blocks blanked out (line numbers kept)."""
    lines = (ROOT / doc).read_text(encoding="utf-8").splitlines()
    for block in blocks(doc):
        for j in range(block.line - 2, block.line + block.code.count("\n")):
            lines[j] = ""
    text = "\n".join(lines)
    return re.sub(r"<!--.*?-->", lambda m: "\n" * m[0].count("\n"), text, flags=re.DOTALL)


@functools.cache
def commands(doc: str) -> tuple[Command, ...]:
    found = []
    for block in blocks(doc):
        if block.lang != "bash":
            continue
        for k, line in enumerate(block.code.splitlines()):
            words = shlex.split(line, comments=True)
            if words and words[0] == "cipm":
                text = shlex.join(words)
                found.append(Command(doc, block.line + k, text, block.not_run))
    text = prose(doc)
    for span in SPAN.finditer(text):
        code = " ".join(span["code"].split())
        if code.startswith("cipm "):  # `cipm` alone names the package
            found.append(Command(doc, text.count("\n", 0, span.start()) + 1, code))
    return tuple(sorted(found, key=lambda c: c.line))


def python_blocks() -> list[Block]:
    return [b for doc in DOCS for b in blocks(doc) if b.lang == "python"]


def all_commands() -> list[Command]:
    return [c for doc in DOCS for c in commands(doc)]


def params(items: list[Any], keys: Callable[[Any], set[str]]) -> list[Any]:
    """pytest params with their doc ids, known bugs marked as strict xfails."""
    marked = []
    for item in items:
        why = next((why for key, why in KNOWN_BUGS.items() if key in keys(item)), None)
        marks = [pytest.mark.xfail(strict=True, reason=why)] if why else []
        marked.append(pytest.param(item, id=item.id, marks=marks))
    return marked


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The models here are tiny: one thread is faster, and on a busy 2-core machine two
    threads made a 32 x 32 matmul about 1000 times slower (the threads wait on each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A torch.distributed group of one process (what torchrun sets up), for the guide's
    `.all_reduce(torch.distributed.group.WORLD)`."""
    import torch.distributed as dist

    if dist.is_initialized():
        yield
        return
    store = dist.FileStore(str(tmp_path_factory.mktemp("world") / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_docs_hold_what_this_file_runs() -> None:
    """Every fenced block is python, bash or plain text; plain text holds no commands and
    bash holds only `cipm` commands and (out of scope) `make` targets; and the docs still
    have the blocks and commands this file is about, so a parsing slip is not a pass."""
    for doc in DOCS:
        for block in blocks(doc):
            assert block.lang in {"python", "bash", ""}, f"{block.id}: ```{block.lang} block"
            for line in block.code.splitlines():
                words = shlex.split(line, comments=True) if block.lang == "bash" else []
                if block.lang == "":
                    assert not line.lstrip().startswith(("cipm ", ">>>", "$ ")), block.id
                elif words:
                    assert words[0] in {"cipm", "make"}, f"{block.id}: cannot run {line!r}"
    assert len(python_blocks()) >= 15 and len(all_commands()) >= 10


# -- python blocks -------------------------------------------------------------------------


def tiny_bert() -> Any:  # a transformers.BertModel
    import transformers

    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=16,
    )
    torch.manual_seed(0)
    return transformers.BertModel(config).eval()


def token_ids(seed: int, vocab: int = 64) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 7), generator=torch.Generator().manual_seed(seed))


@functools.cache
def encoders() -> tuple[torch.nn.Module, ...]:
    """cipm.examples' BERT-style encoder classifier (token ids -> 2 classes; its groups are
    the ones the guide names: tok:residual, blocks.0.mlp.0:hidden, blocks.0.attn.query:heads),
    three seeds."""
    return tuple(catalog.build("encoder", seed=seed)[0] for seed in range(3))


@functools.cache
def shared() -> dict[str, Any]:
    """What the setups are built from, once per session (cipm never changes a model it is
    given, so the blocks can share them)."""
    from cipm.meta.analyzer import MetaAnalyzer  # torch-geometric: loaded when first needed

    a, b, c = encoders()
    x = catalog.build("encoder")[1]
    gen = torch.Generator().manual_seed(0)
    data = [torch.randint(0, 100, (8, 8), generator=gen) for _ in range(4)]
    labels = [torch.randint(0, 2, (8,), generator=gen) for _ in data]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = cipm.trace(a, x)
        quiet = cipm.CollectConfig(progress=False)
        stats = cipm.collect(a, graph, data, config=quiet)
        shards = [cipm.collect(a, graph, data[i : i + 2], config=quiet) for i in (0, 2)]
        bert = tiny_bert()
        bert_graph = cipm.trace(bert, {"input_ids": token_ids(0)})
        hidden_only = cipm.PruneConfig(kinds=("hidden",), progress=False)
        small_bert = cipm.prune(bert, bert_graph, ratio=0.5, method="magnitude", config=hidden_only)
        meta = MetaAnalyzer.pretrained()
        pruned = cipm.prune(a, graph, ratio=0.5, method="magnitude")
    perm = graph.random_permutation(seed=0)
    return {
        "models": (a, b, c),
        "x": x,
        "data": data,
        "labelled": list(zip(data, labels, strict=True)),
        "graph": graph,
        "stats": stats,
        "shards": shards,
        "perm": perm,
        "other": graph.random_permutation(seed=1),
        "pruned": pruned,
        "bert": bert,
        "small_bert": small_bert.model,
        "order_a": meta.policy(a, stats),
        "file_model": cipm.permute(a, perm),
    }


def setup_names() -> dict[str, Any]:
    """The names the docs' python blocks use without defining them (a fresh namespace per
    section; the objects in it are shared)."""
    s = shared()
    model, model_b, model_c = s["models"]
    return {
        "cipm": cipm,  # the guide's blocks assume `import cipm` (the README's does it)
        "torch": torch,
        "model": model,  # the encoder example, seed 0 (token ids (2, 8) -> 2 classes)
        "model_a": model,  # the reference of a pair
        "model_b": model_b,  # the same architecture, other random weights: seed 1
        "model_c": model_c,  # a third: seed 2
        "m0": model,  # align_many's models
        "m1": model_b,
        "m2": model_c,
        "example_inputs": s["x"],  # token ids (2, 8)
        "x": s["x"],  # the same, as the pruning and export sections call them
        "data": s["data"],  # 4 batches of token ids (8, 8)
        "my_shard": s["data"][:2],  # one rank's share of the data
        "public": s["data"],  # batches a federated server holds
        "labelled_data": s["labelled"],  # (token ids, class) pairs
        "test_data": s["labelled"],
        "graph": s["graph"],  # cipm.trace(model, example_inputs)
        "stats": s["stats"],  # cipm.collect(model, graph, data)
        "stats_shard_1": s["shards"][0],  # collect on data[:2]
        "stats_shard_2": s["shards"][1],  # collect on data[2:]
        "perm": s["perm"],  # graph.random_permutation(seed=0)
        "other": s["other"],  # graph.random_permutation(seed=1)
        "group": "blocks.0.mlp.0:hidden",  # a group name
        "pruned": s["pruned"],  # cipm.prune(model, graph, ratio=0.5, method="magnitude")
        "file_model": s["file_model"],  # a model in perm's unit order, as policy=perm says
        "global_model": model,  # federated: the server's model
        "clients": [model_b, model_c],  # the clients' models
        "client_models": [model_b, model_c],
        "client_data": [s["data"][:2], s["data"][2:]],  # each client's own batches
        "n_0": 16,  # the clients' example counts
        "n_1": 16,
        "minilm": s["bert"],  # a tiny random BertModel (the guide's is all-MiniLM-L6-v2)
        "batch": {"input_ids": token_ids(0)},  # its keyword inputs
        "small_hf_model": s["small_bert"],  # that BertModel, half its hidden units pruned
        "state_a": model.state_dict(),  # state dicts of the pair
        "state_b": model_b.state_dict(),
        "start": s["graph"].identity(),  # a start for B's permutation onto A
        "order_a": s["order_a"],  # A's units in the pretrained network's order
    }


def test_every_setup_name_is_used() -> None:
    """The setup stays minimal: each name it defines is read by some block."""
    import ast

    read = {
        node.id
        for block in python_blocks()
        for node in ast.walk(ast.parse(block.code))
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
    }
    assert not set(setup_names()) - read


@dataclass
class Section:
    """The blocks of one section, run in order in one namespace and one folder."""

    blocks: list[Block]
    folder: Path
    names: dict[str, Any] = field(default_factory=setup_names)
    done: int = 0
    failed: str | None = None


SECTIONS: dict[tuple[str, str], Section] = {}


def run_block(block: Block, names: dict[str, Any]) -> None:
    source = "\n" * (block.line - 1) + block.code  # tracebacks name the markdown's lines
    exec(compile(source, str(ROOT / block.doc), "exec"), names)


@pytest.mark.parametrize(
    "block", params(python_blocks(), lambda b: {x.strip() for x in b.code.splitlines()})
)
@pytest.mark.usefixtures("world")
def test_python_block(
    block: Block, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    if block.not_run:
        pytest.skip(f"not run: {block.not_run}")
    key = (block.doc, block.section)
    if key not in SECTIONS:
        same = [b for b in python_blocks() if (b.doc, b.section) == key and not b.not_run]
        SECTIONS[key] = Section(same, tmp_path_factory.mktemp("section"))
    section = SECTIONS[key]
    monkeypatch.chdir(section.folder)
    index = section.blocks.index(block)
    while section.done < index:  # the blocks before it, if they did not run yet (-k)
        if section.failed:
            pytest.fail(f"{section.failed} (earlier in this section) failed")
        earlier = section.blocks[section.done]
        try:
            run_block(earlier, section.names)
        except Exception:
            section.failed = earlier.id
            raise
        section.done += 1
    if section.failed:
        pytest.fail(f"{section.failed} (earlier in this section) failed")
    section.done = index + 1
    try:
        run_block(block, section.names)
    except Exception:
        section.failed = block.id
        raise


# -- command lines -------------------------------------------------------------------------


def hf_model(path: Path) -> None:
    tiny_bert().save_pretrained(path)


def ids(path: Path) -> None:
    torch.save(token_ids(0), path)


def program(path: Path) -> None:
    from cipm.discovery.program import save_program

    model, _ = catalog.build("cnn_bn")
    save_program(model, torch.randn(1, 3, 32, 32), path)


def calibration(path: Path) -> None:
    torch.save(torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)), path)


# The input files the docs' commands name, and how each is made (in the command's folder).
FIXTURES: dict[str, Callable[[Path], None]] = {
    "hf_model/": hf_model,  # a tiny random BertModel, save_pretrained
    "ids.pt": ids,  # its token ids, a (2, 7) tensor
    "model.pt2": program,  # cnn_bn exported at input 1,3,32,32 (torch.export archive)
    "calibration.pt": calibration,  # 8 images (8, 3, 32, 32)
}
OUTPUT_FLAGS = {"-o", "--output", "--json"}


def is_path(word: str) -> bool:
    return "/" in word or re.search(r"\.[A-Za-z]\w*$", word) is not None


def files(command: Command) -> tuple[list[str], list[str]]:
    """(inputs, outputs): the paths a command names; an output follows -o, --output or
    --json."""
    inputs: list[str] = []
    outputs: list[str] = []
    words = command.argv
    for i, word in enumerate(words):
        if word.startswith("-") or not is_path(word):
            continue
        (outputs if i and words[i - 1] in OUTPUT_FLAGS else inputs).append(word)
    return inputs, outputs


def is_synopsis(command: Command) -> bool:
    words = command.argv
    return any(PLACEHOLDER.search(w) or set(w) & set("[]|") or "..." in w for w in words)


def verb_needs_arguments(verb: str) -> bool:
    parser = subcommands(parser_of()).get(verb)
    return parser is not None and any(
        a.required for a in parser._actions if not isinstance(a, argparse._HelpAction)
    )


def parser_of() -> argparse.ArgumentParser:
    from cipm.cli import _parser

    return _parser()


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def check_names(command: Command) -> None:
    """The verbs and options a synopsis (or a command not run) names exist: ``a|b`` is
    each of a and b, ``[...]`` optional, an upper-case word a placeholder."""
    parser = parser_of()
    words = [w.strip("[]") for w in command.argv if w not in {"...", "[", "]"}]
    for word in words:
        verbs = subcommands(parser)
        if word.startswith("-"):
            flag = word.split("=")[0]
            assert flag in parser._option_string_actions, f"{command.text}: no option {flag}"
        elif verbs and not PLACEHOLDER.search(word):
            choices = word.split("|")
            unknown = [c for c in choices if c not in verbs]
            assert not unknown, f"{command.text}: no command {unknown} (has {sorted(verbs)})"
            parser = verbs[choices[0]]  # alternatives are checked by their first's options


def plan(command: Command) -> tuple[list[str], list[str]]:
    """(inputs, outputs) of a command to run; a failure if it names an input file no
    fixture makes, or a model that is neither such a file nor a built-in example."""
    inputs, outputs = files(command)
    unknown = [f for f in inputs if f not in FIXTURES]
    assert not unknown, f"{command.text}: no fixture makes {unknown}; add one to FIXTURES"
    words = command.argv
    if not {"-h", "--help"} & set(words):
        model = getattr(parser_of().parse_args(words), "model", None)
        examples = {**catalog.MODELS, **catalog.LARGE}
        assert model is None or model in examples or model in inputs, (
            f"{command.text}: {model} is neither a built-in example nor a file FIXTURES makes"
        )
    return inputs, outputs


def test_the_rules_on_made_up_lines() -> None:
    """What the rules make of lines the docs might hold (so a new doc line is caught)."""
    line = "cipm inspect mine.safetensors --factory pkg.models:build --input 1,3,8,8"
    assert files(Command("x.md", 1, line)) == (["mine.safetensors"], [])
    with pytest.raises(AssertionError, match=r"no fixture makes \['mine.safetensors'\]"):
        plan(Command("x.md", 1, line))
    with pytest.raises(AssertionError, match="neither a built-in example"):
        plan(Command("x.md", 1, "cipm inspect resnet1000"))
    line = "cipm prune model.pt2 --input 1,3,32,32 --ratio 0.5 --size tok:residual=24 -o a/b/"
    assert plan(Command("x.md", 1, line)) == (["model.pt2"], ["a/b/"])
    for synopsis in ("cipm export MODEL -o PATH [--format NAME]", "cipm meta zoo|train|eval"):
        assert is_synopsis(Command("x.md", 1, synopsis))
        check_names(Command("x.md", 1, synopsis))
    assert not is_synopsis(Command("x.md", 1, line))
    with pytest.raises(AssertionError, match="no option --nope"):
        check_names(Command("x.md", 1, "cipm export MODEL [--nope]"))
    with pytest.raises(AssertionError, match=r"no command \['fit'\]"):
        check_names(Command("x.md", 1, "cipm meta zoo|fit"))
    lines = ["text", "<!-- not run: a reason", "on two lines -->", "```python", "x", "```"]
    assert NOT_RUN.match(comment_before(lines, 3))["reason"] == "a reason on two lines"  # type: ignore[index]
    assert comment_before(["text", "", "```bash"], 2) == ""


@pytest.mark.parametrize("command", params(all_commands(), lambda c: {c.text}))
def test_command(
    command: Command,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    words = command.argv
    if command.not_run:
        check_names(command)
        pytest.skip(f"not run: {command.not_run}")
    if is_synopsis(command) or (len(words) == 1 and verb_needs_arguments(words[0])):
        check_names(command)  # a synopsis or a verb's name in prose, not a command
        return
    inputs, outputs = plan(command)
    monkeypatch.chdir(tmp_path)
    for name in inputs:
        FIXTURES[name](tmp_path / name)
    code: Any
    try:
        code = main(words)
    except SystemExit as exit_:  # argparse: --help, or a command it refuses
        code = exit_.code
    out, err = capsys.readouterr()
    assert code == 0, f"{command.text} exited {code}:\n{err}"
    for name in outputs:
        assert (tmp_path / name).exists(), f"{command.text} did not write {name}\n{out}"
    if words == ["--help"]:
        assert out.startswith("usage: cipm") and "examples:" in out
    elif outputs and "--json" not in words:
        assert f"wrote {Path(outputs[0])}" in out
