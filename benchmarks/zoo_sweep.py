"""Coverage sweep: every torchvision classification model and the Hugging Face families cipm
covers, traced, permuted and pruned, one model per process.

Per model (random weights, BatchNorm running statistics randomized, float64 unless the family
takes only float32): trace time and whether any op needed ``unknown="freeze"``; groups and the
share of parameters that are members of one; whether a random permutation of every group
leaves the outputs the same (relative max error below 1e-9 in float64; 1e-6 where a family's
norms compute in float32 whatever the model's dtype; 1e-4 in float32);
``prune(ratio=0.5, method="magnitude", config=PruneConfig(example_inputs=...))``: parameters
before and after,
whether the result runs, which groups were kept whole and why; and the peak resident memory
of trace + permute + prune, as a multiple of the model's bytes (the model itself counts as
1). The multiple subtracts what one plain forward pass needs beyond the weights (the example
input's activations), measured first in the same process, and is shown for models of 100 MB
or more; for smaller ones torch.export's own fixed memory dominates, so the table gives their
peak in MB instead. Memory is resident set size sampled from /proc every 2 ms.

    .venv/bin/python benchmarks/zoo_sweep.py [--only resnet18,vit_b_16] [--family torchvision]
        [--timeout 1200] [--results out/zoo_sweep.jsonl] [--resume]

Families: ``torchvision`` (classification), ``huggingface``, and ``all`` (those two, the
issue-13 sweep); beyond classification (issue 30), ``segmentation`` (every
torchvision.models.segmentation builder, ``weights=None, weights_backbone=None``, FCN and
DeepLabV3 with their auxiliary heads, 1x3x128x128; outputs ``out`` and ``aux``),
``detection_backbone`` (the ResNet-FPN and MobileNetV3-FPN backbones of torchvision's
detectors, FrozenBatchNorm2d, 1x3x128x128; an OrderedDict of feature maps), ``video``
(torchvision.models.video: 1x3x8x112x112 clips, 1x3x16x224x224 for S3D, MViT and Video Swin,
which need it), ``recurrent`` (small models built here: LSTM/GRU/RNN sequence classifiers and
a GRU encoder with a GRUCell decoder, and small nets for the other new rules: UNet, ESPCN,
style transfer with InstanceNorm, a GCN with scatter_add, PReLU, GLU, weight and spectral
norm), and ``beyond`` (those four). Outputs that are dicts are compared tensor by tensor (the
largest relative error of any); a pruned model must return tensors of the original's shapes.
For ``recurrent``, parameters that start constant (norm affines, PReLU slopes) get noise so a
wrong permutation of them shows.

Each model runs in its own process (a fresh memory high-water mark, and a model that blows up
costs only its row); rows are appended to the JSON-lines file as they finish, so ``--resume``
picks up an interrupted sweep. A model whose pruning runs past ``--timeout`` keeps the figures
of its trace and permutation (its row's error says "timed out after N s in prune"). Weights
are drawn after ``torch.manual_seed(0)`` (Hugging Face: ``hf_families``' own seed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
import hf_families
import vision

import cipm

SIZES = {"inception_v3": 299}  # input resolution where 224 is not the model's own
LARGE_MB = 100  # below this, torch.export's own fixed memory dominates any multiple
BEYOND = ("segmentation", "detection_backbone", "video", "recurrent")
DENSE_SIZE = 128  # segmentation and detection backbones: 1x3x128x128
CLIPS = {"s3d": (16, 224, 224), "mvit": (16, 224, 224), "swin3d": (16, 224, 224)}  # by prefix
CLIP = (8, 112, 112)  # the other video models
DETECTION = {
    "resnet18_fpn": ("resnet", "resnet18"),
    "resnet50_fpn": ("resnet", "resnet50"),
    "mobilenet_v3_large_fpn": ("mobilenet", "mobilenet_v3_large"),
}


class PeakMemory:
    """Peak resident set size, sampled by a background thread; `mark` starts a new phase."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = self.now()
        self._stop = False
        threading.Thread(target=self._watch, daemon=True).start()

    def now(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def mark(self) -> int:
        """The peak since the last mark; the next phase starts from the present level."""
        peak, self.peak = self.peak, self.now()
        return max(peak, self.peak)

    def _watch(self) -> None:
        while not self._stop:
            self.peak = max(self.peak, self.now())
            time.sleep(0.002)


def build(family: str, name: str) -> tuple[torch.nn.Module, tuple[Any, ...], float]:
    """The model, its example inputs and the relative error a permuted copy may show."""
    if family == "huggingface":
        model, x, _ = hf_families.build(name)
        return model, x, hf_families.tolerance(name)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if family == "recurrent":
        model, x = SMALL[name](gen)
        model = model.double()
        with torch.no_grad():  # constant starts (norm affines, slopes, gains): made random
            for p in model.parameters():
                if p.numel() > 1 and bool((p == p.flatten()[0]).all()):
                    p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.1)
        model.eval()
        x = tuple(t.double() if t.is_floating_point() else t for t in x)
    else:
        tv = vision.torchvision()
        if family == "torchvision":
            model = vision.build(name)
            size = SIZES.get(name, 224)
            shape: tuple[int, ...] = (1, 3, size, size)
        elif family == "segmentation":
            aux = {} if name.startswith("lraspp") else {"aux_loss": True}
            model = tv.models.get_model(name, weights=None, weights_backbone=None, **aux)
            shape = (1, 3, DENSE_SIZE, DENSE_SIZE)
        elif family == "detection_backbone":
            from torchvision.models.detection import backbone_utils

            kind, backbone = DETECTION[name]
            if kind == "resnet":
                model = backbone_utils.resnet_fpn_backbone(
                    backbone_name=backbone, weights=None, trainable_layers=5
                )
            else:
                model = backbone_utils.mobilenet_backbone(
                    backbone_name=backbone, weights=None, fpn=True
                )
            shape = (1, 3, DENSE_SIZE, DENSE_SIZE)
        else:  # video
            clip = next((c for p, c in CLIPS.items() if name.startswith(p)), CLIP)
            model = tv.models.get_model(name, weights=None)
            shape = (1, 3, *clip)
        model.eval()
        _randomize_statistics(model, gen)
        x = (torch.randn(*shape, generator=gen, dtype=torch.float64),)
        model = model.double()
    return model, x, 1e-9


def _randomize_statistics(model: torch.nn.Module, gen: torch.Generator) -> None:
    """BatchNorm (and the detectors' FrozenBatchNorm2d): statistics that are not 0 and 1."""
    for module in model.modules():
        mean, var = getattr(module, "running_mean", None), getattr(module, "running_var", None)
        if isinstance(mean, torch.Tensor) and isinstance(var, torch.Tensor):
            n = mean.numel()
            mean.copy_(torch.randn(n, generator=gen) * 0.1)
            var.copy_(torch.rand(n, generator=gen) + 0.5)


# -- small models for the recurrent family: sequence models and the other new rules ---------


class SequenceClassifier(nn.Module):
    """Embedding -> LSTM/GRU/RNN -> mean over time -> Linear; `read="out"`: the head reads the
    recurrent output at every step."""

    def __init__(self, rnn: nn.RNNBase, read: str = "mean") -> None:
        super().__init__()
        self.embed = nn.Embedding(100, rnn.input_size)
        self.rnn, self.read = rnn, read
        width = (rnn.proj_size or rnn.hidden_size) * (2 if rnn.bidirectional else 1)
        self.head = nn.Linear(width, 5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.rnn(self.embed(tokens))[0]
        return self.head(out.mean(1) if self.read == "mean" else out)


def _sequence(rnn: nn.RNNBase, read: str = "mean") -> Callable[[torch.Generator], Any]:
    return lambda gen: (SequenceClassifier(rnn, read), (torch.randint(0, 100, (2, 12)),))


class Seq2Seq(nn.Module):
    """GRU encoder; its final state starts a GRUCell decoder run over the (teacher-forced)
    target tokens, a Linear over the vocabulary at every step."""

    def __init__(self, vocab: int = 40, width: int = 16, hidden: int = 24) -> None:
        super().__init__()
        self.src_embed, self.tgt_embed = nn.Embedding(vocab, width), nn.Embedding(vocab, width)
        self.encoder = nn.GRU(width, hidden, batch_first=True)
        self.cell = nn.GRUCell(width, hidden)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.src_embed(src))[1][0]
        steps = []
        for t in range(tgt.shape[1]):
            h = self.cell(self.tgt_embed(tgt[:, t]), h)
            steps.append(self.out(h))
        return torch.stack(steps, 1)


def _conv_block(i: int, o: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(),
        nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(),
    )  # fmt: skip


class UNet(nn.Module):
    """Two levels down (conv blocks, max pooling), up by nearest and by bilinear upsampling,
    the encoder's maps concatenated at each level."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1, self.enc2, self.mid = _conv_block(3, 8), _conv_block(8, 16), _conv_block(16, 32)
        self.up2 = nn.Upsample(scale_factor=2, mode="nearest")
        self.up1 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.dec2, self.dec1 = _conv_block(32 + 16, 16), _conv_block(16 + 8, 8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(nn.functional.max_pool2d(e1, 2))
        m = self.mid(nn.functional.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        return self.head(self.dec1(torch.cat([self.up1(d2), e1], 1)))


class ESPCN(nn.Module):
    """ESPCN (x3): two tanh convs, a conv to 8·r² channels, pixel_shuffle; then a 3x3 conv
    to RGB, so the shuffled channels are hidden units."""

    def __init__(self, r: int = 3) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 32, 5, padding=2), nn.Conv2d(32, 16, 3, padding=1)
        self.conv3, self.shuffle = nn.Conv2d(16, 8 * r * r, 3, padding=1), nn.PixelShuffle(r)
        self.refine = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.conv2(torch.tanh(self.conv1(x))))
        return self.refine(self.shuffle(self.conv3(x)))


def _conv_in(i: int, o: int, k: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(i, o, k, stride, k // 2), nn.InstanceNorm2d(o, affine=True), nn.ReLU()]


class Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_in(c, c, 3), nn.Conv2d(c, c, 3, padding=1))
        self.norm = nn.InstanceNorm2d(c, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm(self.body(x))


def style_transfer() -> nn.Module:
    """Johnson et al.'s transformer net, narrow: conv 9x9, stride-2 conv, two residual
    blocks, nearest upsampling + conv, conv 9x9 to RGB; InstanceNorm2d(affine) throughout."""
    return nn.Sequential(
        *_conv_in(3, 16, 9), *_conv_in(16, 32, 3, 2), Residual(32), Residual(32),
        nn.Upsample(scale_factor=2, mode="nearest"), *_conv_in(32, 16, 3),
        nn.Conv2d(16, 3, 9, 1, 4),
    )  # fmt: skip


class GCN(nn.Module):
    """Two graph convolutions, messages h[src]·w summed into their destinations with
    scatter_add; mean over nodes, Linear."""

    def __init__(self, features: int = 8, hidden: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(features, hidden), nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor, edges: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        for lin in (self.lin1, self.lin2):
            h = lin(x)
            messages = h[edges[0]] * w.unsqueeze(-1)
            index = edges[1].unsqueeze(-1).expand_as(messages)
            x = torch.relu(torch.zeros_like(h).scatter_add(0, index, messages))
        return self.head(x.mean(0))


def _graph(gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """10 nodes, 24 random edges and self-loops, symmetric normalization 1/sqrt(d_i d_j)."""
    n = 10
    src, dst = torch.randint(0, n, (2, 24), generator=gen)
    loops = torch.arange(n)
    edges = torch.stack([torch.cat([src, dst, loops]), torch.cat([dst, src, loops])])
    degree = torch.bincount(edges[1], minlength=n).double()
    w = (degree[edges[0]] * degree[edges[1]]).rsqrt()
    return torch.randn(n, 8, generator=gen), edges, w


class GLUNet(nn.Module):
    """Gated convolutional language model style: Embedding, two Conv1d -> GLU blocks (the
    second residual), mean over time, Linear."""

    def __init__(self, width: int = 16, hidden: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, width)
        self.conv1 = nn.Conv1d(width, 2 * hidden, 3, padding=1)
        self.conv2 = nn.Conv1d(hidden, 2 * hidden, 3, padding=1)
        self.head = nn.Linear(hidden, 4)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = nn.functional.glu(self.conv1(self.embed(tokens).transpose(1, 2)), dim=1)
        h = h + nn.functional.glu(self.conv2(h), dim=1)
        return self.head(h.mean(2))


def prelu_cnn() -> nn.Module:
    """Convs with per-channel PReLU and one shared-slope PReLU, pooled, Linear."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.PReLU(16), nn.Conv2d(16, 32, 3, 2, 1), nn.PReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.PReLU(32), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, 10),
    )  # fmt: skip


def discriminator(norm: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """DCGAN-style discriminator, every conv and the Linear wrapped in `norm`."""
    return nn.Sequential(
        norm(nn.Conv2d(3, 16, 4, 2, 1)), nn.LeakyReLU(0.2),
        norm(nn.Conv2d(16, 32, 4, 2, 1)), nn.LeakyReLU(0.2),
        norm(nn.Conv2d(32, 64, 4, 2, 1)), nn.LeakyReLU(0.2),
        nn.Flatten(), norm(nn.Linear(64 * 4 * 4, 1)),
    )  # fmt: skip


def _image(c: int, size: int) -> Callable[[torch.Generator], tuple[torch.Tensor]]:
    return lambda gen: (torch.randn(1, c, size, size, generator=gen),)


def _with(model: Callable[[], nn.Module], inputs: Callable[[torch.Generator], Any]) -> Any:
    return lambda gen: (model(), inputs(gen))


_tokens = lambda gen: (torch.randint(0, 50, (2, 12), generator=gen),)  # noqa: E731
_parametrized = nn.utils.parametrizations
SMALL: dict[str, Callable[[torch.Generator], tuple[nn.Module, tuple[torch.Tensor, ...]]]] = {
    "lstm_2l": lambda g: _sequence(nn.LSTM(16, 24, 2, batch_first=True))(g),
    "lstm_2l_bi": lambda g: _sequence(nn.LSTM(16, 24, 2, batch_first=True, bidirectional=True))(g),
    "gru_2l_bi": lambda g: _sequence(nn.GRU(16, 24, 2, batch_first=True, bidirectional=True))(g),
    "rnn_tanh_2l": lambda g: _sequence(nn.RNN(16, 24, 2, batch_first=True))(g),
    "lstm_1l_out": lambda g: _sequence(nn.LSTM(16, 24, batch_first=True), read="out")(g),
    "lstm_proj": lambda g: _sequence(nn.LSTM(16, 24, 2, batch_first=True, proj_size=12))(g),
    "gru_seq2seq": lambda g: (
        Seq2Seq(),
        (torch.randint(0, 40, (2, 9), generator=g), torch.randint(0, 40, (2, 6), generator=g)),
    ),
    "unet": _with(UNet, _image(3, 64)),
    "espcn": _with(ESPCN, _image(3, 24)),
    "style_transfer": _with(style_transfer, _image(3, 64)),
    "gcn_scatter_add": _with(GCN, _graph),
    "prelu_cnn": _with(prelu_cnn, _image(3, 32)),
    "glu_convnet": _with(GLUNet, _tokens),
    "weight_norm_disc": _with(lambda: discriminator(_parametrized.weight_norm), _image(3, 32)),
    "spectral_norm_disc": _with(lambda: discriminator(_parametrized.spectral_norm), _image(3, 32)),
}


def params_in_groups(model: torch.nn.Module, graph: cipm.SymmetryGraph) -> float:
    keys = {m.key for g in graph.groups for m in g.members}
    sizes = dict(model.named_parameters())
    total = sum(p.numel() for p in sizes.values())
    return sum(p.numel() for k, p in sizes.items() if k in keys) / total


def run_one(
    family: str, name: str, progress: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """One model's row; `progress` gets the row so far once trace and permute are done (the
    parent keeps it if pruning then runs past the timeout)."""
    memory = PeakMemory()
    row: dict[str, Any] = {"family": family, "model": name}
    model, x, tolerance = build(family, name)
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    row["params_M"] = sum(p.numel() for p in model.parameters()) / 1e6
    base = memory.now() - weights
    memory.mark()
    with torch.no_grad():
        y = _tensors(model(*x))
    forward_extra = memory.mark() - base - weights
    t = time.perf_counter()
    try:
        try:
            graph = cipm.trace(model, x)
            row["freeze"] = ""
        except cipm.UnsupportedOpError as e:
            graph = cipm.trace(model, x, unknown="freeze")
            row["freeze"], row["freeze_module"] = e.op, e.module
    except Exception as e:  # a row of the table, not a crash of the sweep
        cause = f" (from {type(e.__cause__).__name__}: {e.__cause__})" if e.__cause__ else ""
        row["error"] = f"trace: {type(e).__name__}: {e}{cause}"[:600]
        return row
    row["trace_s"] = time.perf_counter() - t
    phases = {"trace": memory.mark()}
    row["groups"] = len(graph)
    row["in_groups"] = params_in_groups(model, graph)
    perm = cipm.Permutation.random(graph, seed=0)
    permuted = cipm.permute(model, perm)
    with torch.no_grad():
        y2 = _tensors(permuted(*x))
    del permuted
    phases["permute"] = memory.mark()
    pairs = zip(y, y2, strict=True)  # a dict's tensors: the largest relative error of any
    error = max(float((b - a).abs().max() / a.abs().max().clamp_min(1e-30)) for a, b in pairs)
    row["exact"] = error < tolerance
    row["perm_error"] = error
    if progress is not None:
        progress(row)
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", cipm.CipmWarning)
        try:
            small_result = cipm.prune(
                model,
                graph,
                ratio=0.5,
                method="magnitude",
                config=cipm.PruneConfig(example_inputs=x, progress=False),
            )
            small = small_result.model
            with torch.no_grad():
                y3 = _tensors(small(*x))
            row["pruned_params_M"] = sum(p.numel() for p in small.parameters()) / 1e6
            row["runs"] = True
            row["same_shapes"] = [a.shape for a in y] == [b.shape for b in y3]
            report = small_result.report
            row["kept_whole"] = [f"{k.group}: {k.reason}" for k in report.kept_whole]
        except Exception as e:  # a row of the table, not a crash of the sweep
            row["runs"] = False
            row["prune_error"] = f"{type(e).__name__}: {str(e)[:300]}"
    row["warnings"] = [str(w.message)[:200] for w in caught]
    row["prune_s"] = time.perf_counter() - t
    phases["prune"] = memory.mark()
    peak = max(phases.values())
    row["model_MB"] = weights / 2**20
    row["peak_MB"] = (peak - base) / 2**20
    row["memory_x"] = (peak - base - max(forward_extra, 0)) / weights
    row["phase_x"] = {k: (v - base - max(forward_extra, 0)) / weights for k, v in phases.items()}
    return row


def _first(y: Any) -> torch.Tensor:
    if isinstance(y, torch.Tensor):
        return y
    if hasattr(y, "logits"):
        return y.logits
    if hasattr(y, "last_hidden_state"):
        return y.last_hidden_state
    return _first(y[0])


def _tensors(y: Any) -> list[torch.Tensor]:
    """The outputs to compare: every tensor of a dict (segmentation's out and aux, an FPN's
    levels), in order; else the one tensor `_first` picks (a Hugging Face output is a dict
    too, read as before: its logits or last hidden state)."""
    if isinstance(y, Mapping) and not hasattr(y, "logits") and not hasattr(y, "last_hidden_state"):
        return [t for v in y.values() for t in _tensors(v)]
    return [_first(y)]


def models(family: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if family in ("torchvision", "all"):
        found += [("torchvision", n) for n in vision.classification_models()]
    if family in ("huggingface", "all"):
        found += [("huggingface", n) for n in hf_families.FAMILIES]
    tv = vision.torchvision()
    if family in ("segmentation", "beyond") and tv is not None:
        found += [("segmentation", n) for n in tv.models.list_models(module=tv.models.segmentation)]
    if family in ("detection_backbone", "beyond") and tv is not None:
        found += [("detection_backbone", n) for n in DETECTION]
    if family in ("video", "beyond") and tv is not None:
        found += [("video", n) for n in tv.models.list_models(module=tv.models.video)]
    if family in ("recurrent", "beyond"):
        found += [("recurrent", n) for n in SMALL]
    return found


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"| {'model':24s} | params M | trace s | freeze | groups | in groups | exact "
        "| pruned M | runs | kept whole (n: first reason) | memory x |"
    )
    lines = [head, "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']:24s} | failed: {r['error'][:120]} |")
            continue
        whole = r.get("kept_whole") or []
        kept = f"{len(whole)}: {whole[0].split(': ', 1)[1][:48]}" if whole else "-"
        memory = (
            f"{r['memory_x']:8.2f}" if r["model_MB"] >= LARGE_MB else f"({r['peak_MB']:.0f} MB)"
        )
        lines.append(
            f"| {r['model']:24s} | {r['params_M']:8.3g} | {r['trace_s']:7.1f} "
            f"| {r['freeze'] or '-':6s} | {r['groups']:6d} | {r['in_groups']:9.0%} "
            f"| {'yes' if r['exact'] else 'NO':5s} | {r.get('pruned_params_M', float('nan')):8.3g} "
            f"| {'yes' if r['runs'] else 'NO':4s} | {kept} | {memory} |"
        )
    return "\n".join(lines)


def table_beyond(rows: list[dict[str, Any]]) -> str:
    """The issue-30 table: the freeze column names the op; exactness gives the error; pruning
    gives parameters before -> after; peak memory in MB beyond the process's baseline, and as
    a multiple of the model's bytes for models of `LARGE_MB` or more; wall time."""
    head = (
        f"| {'family':18s} | {'model':28s} | trace s | traced without freeze | groups "
        "| in groups | exact (max rel. error) | pruned 0.5: params M | runs | kept whole "
        "| peak MB | memory x | wall s |"
    )
    lines = [head, "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"]
    for r in rows:
        wall = f"{r['wall_s']:.0f}" if "wall_s" in r else "?"
        if "error" in r and "exact" not in r:
            lines.append(
                f"| {r['family']:18s} | {r['model']:28s} | failed: {r['error']} | {wall} |"
            )
            continue
        freeze = f"no: {r['freeze']}" if r["freeze"] else "yes"
        if "error" in r:  # timed out in prune: what trace and permute measured
            after, runs = "-", r["error"]
        elif r["runs"]:
            after = f"{r['pruned_params_M']:.4g}"
            runs = "yes" if r.get("same_shapes", True) else "shapes differ"
        else:
            after, runs = "-", f"NO: {r['prune_error'][:100]}"
        whole = r.get("kept_whole") or []
        kept = f"{len(whole)}: {whole[0].split(': ', 1)[1][:60]}" if whole else "-"
        memory = f"{r['memory_x']:.2f}" if r.get("model_MB", 0) >= LARGE_MB else "-"
        peak = f"{r['peak_MB']:.0f}" if "peak_MB" in r else "-"
        lines.append(
            f"| {r['family']:18s} | {r['model']:28s} | {r['trace_s']:7.1f} | {freeze} "
            f"| {r['groups']:6d} | {r['in_groups']:9.1%} "
            f"| {'yes' if r['exact'] else 'NO'} ({r['perm_error']:.1e}) "
            f"| {r['params_M']:.4g} → {after} | {runs} | {kept} "
            f"| {peak} | {memory} | {wall} |"
        )
    return "\n".join(lines)


def summary(rows: list[dict[str, Any]]) -> str:
    ok = [r for r in rows if "error" not in r]
    traced = [r for r in rows if "exact" in r]  # a row that timed out in prune included
    n = len(rows)
    no_freeze = sum(1 for r in traced if not r["freeze"])
    exact = sum(1 for r in traced if r["exact"])
    runs = sum(1 for r in ok if r["runs"] and r["pruned_params_M"] < r["params_M"])
    large = [r for r in ok if r["model_MB"] >= LARGE_MB]
    memory = sum(1 for r in large if r["memory_x"] <= 2.5)
    small = max((r["peak_MB"] for r in ok if r["model_MB"] < LARGE_MB), default=0.0)
    return (
        f"{n} models: {no_freeze}/{n} traced without freeze, {exact}/{n} exact, "
        f"{runs}/{n} smaller and running at 50 %; peak memory within 2.5x model bytes for "
        f"{memory}/{len(large)} models of {LARGE_MB} MB or more (worst "
        f"{max((r['memory_x'] for r in large), default=0):.2f}x); the smaller ones peak at "
        f"most {small:.0f} MB beyond the process's baseline"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    families = ("torchvision", "huggingface", "all", *BEYOND, "beyond")
    parser.add_argument("--family", choices=families, default="all")
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per model")
    parser.add_argument("--results", type=Path, default=Path("out/zoo_sweep.jsonl"))
    parser.add_argument("--resume", action="store_true", help="skip models already in results")
    parser.add_argument("--one", nargs=2, metavar=("FAMILY", "NAME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        warnings.simplefilter("ignore")
        family, name = args.one
        progress = lambda row: print(json.dumps(row), flush=True)  # noqa: E731
        print(json.dumps(run_one(family, name, progress)))
        return
    chosen = models(args.family)
    if args.only:
        wanted = set(args.only.split(","))
        chosen = [(f, n) for f, n in chosen if n in wanted]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    done: dict[str, dict[str, Any]] = {}
    if args.resume and args.results.exists():
        for line in args.results.read_text().splitlines():
            row = json.loads(line)
            done[row["model"]] = row
    elif args.results.exists():
        args.results.unlink()
    rows = []
    for i, (family, name) in enumerate(chosen):
        if name in done:
            rows.append(done[name])
            continue
        t = time.perf_counter()
        row = _child(family, name, args.timeout)
        row["wall_s"] = time.perf_counter() - t
        rows.append(row)
        with args.results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        state = row.get("error") or ("ok" if row["exact"] and row["runs"] else "check")
        print(f"[{i + 1}/{len(chosen)}] {name}: {state} ({time.perf_counter() - t:.0f} s)",
              file=sys.stderr, flush=True)  # fmt: skip
    classification = [r for r in rows if r["family"] not in BEYOND]
    beyond = [r for r in rows if r["family"] in BEYOND]
    if classification:
        print(table(classification))
    if beyond:
        print(table_beyond(beyond))
    print(summary(rows))


def _child(family: str, name: str, timeout: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--one", family, name]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:  # the row so far, if trace and permute finished
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        lines = out.strip().splitlines()
        if lines:  # a complete row if only the exit was late
            row = json.loads(lines[-1])
            return (
                row if "runs" in row else {**row, "error": f"timed out after {timeout} s in prune"}
            )
        return {"family": family, "model": name, "error": f"timed out after {timeout} s"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        killed = " (killed: out of memory?)" if done.returncode < 0 else ""
        return {"family": family, "model": name, "error": f"{last}{killed}"}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    main()
