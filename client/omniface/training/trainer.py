"""The training loop: one detection batch and one attribute batch per step, masked task
losses, task weighting, ReSup and distribution matching, checkpoints that resume exactly.

A checkpoint (``<out>/last.pt``) holds the model (``{"model", "config"}`` like every
OmniFaceNet checkpoint, so ``omniface.nn.load_model`` reads it), the optimiser,
scheduler, weighting and ReSup states, the python / numpy / torch RNG states, the step
reached and the data position (each data set's epoch at that step; the stream itself is
a pure function of the step, see ``omniface.data.mixed``). It is written every
``train.checkpoint_minutes``, at the end, and when the run gets SIGINT or SIGTERM.
``<out>/model.pt`` (model + config only) is written at the end for export.

``<out>/metrics.csv`` gets one row every ``train.log_every`` steps (per-task losses
averaged over the steps since the last row where the task was present, the task weights,
the learned log-variances, the learning rate); ``<out>/metrics.png`` plots it.
"""

from __future__ import annotations

import csv
import math
import os
import random
import signal
import time
import warnings
from pathlib import Path

import numpy as np

from omniface import contract
from omniface.errors import require

torch = require("torch", "train")

from omniface.data.mixed import TrainStream, make_loader  # noqa: E402

from .datasets import build_stream  # noqa: E402

from .distribution_matching import DistributionMatching  # noqa: E402
from .losses import attribute_losses, detection_losses  # noqa: E402
from .plots import plot_metrics  # noqa: E402
from .resup import ReSup, similarity  # noqa: E402
from .targets import batch_targets  # noqa: E402
from .weighting import TASK_UNITS, UncertaintyWeighting, build_weighting  # noqa: E402

DET_UNITS = ("det_score", "det_box", "det_landmarks")
SHORT = {"det_score": "score", "det_box": "box", "det_landmarks": "lmk", "age": "age", "gender": "gen",
         "expression": "expr", "smile": "smile", "head_pose": "pose", "glasses": "glass", "action_units": "au"}
"""Progress-bar names of the task units."""


def normalise(images, device):
    """uint8 NHWC -> float NCHW ``(x - PIXEL_MEAN) * PIXEL_SCALE`` on ``device``."""
    x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    return (x - contract.PIXEL_MEAN) * contract.PIXEL_SCALE


def pick_device(name: str):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), int(np_state[2]), int(np_state[3]), float(np_state[4])),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def expression_log_prior(stream) -> list[float]:
    """log of the expression class frequencies over the stream's training items (for
    logit-adjusted cross-entropy); classes never seen get the smallest seen count."""
    counts = np.zeros(len(contract.EXPRESSIONS))
    for recs in stream.faces.values():
        if not len(recs) or "expression" not in recs[0].labels:
            continue
        for i in range(len(recs)):
            counts[int(recs[i].labels["expression"])] += 1
    counts = np.where(counts > 0, counts, counts[counts > 0].min() if (counts > 0).any() else 1.0)
    return np.log(counts / counts.sum()).tolist()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_lambda(warmup: int, total: int, min_ratio: float):
    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    return f


class Trainer:
    """``Trainer(cfg, out_dir).run()``; ``resume=True`` continues from ``out_dir/last.pt``."""

    def __init__(self, cfg: dict, out_dir: str | Path, stream: TrainStream | None = None, resume: bool = False,
                 quiet: bool = False):
        from omniface.nn.model import OmniFaceNet

        self.cfg = cfg
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.quiet = quiet
        t = cfg["train"]
        torch.set_num_threads(int(t["threads"]))
        seed_everything(int(cfg["seed"]))
        self.device = pick_device(t["device"])
        # data.stream_device: where a cached stream cuts its batches ("auto": on the
        # training device, the cache then lives in GPU memory; "cpu": loader workers).
        where = str(cfg["data"].get("stream_device", "auto"))
        where = str(self.device) if where == "auto" else where
        self.stream = stream if stream is not None else build_stream(cfg, device=where, quiet=quiet)

        m = cfg["model"]
        self.model = OmniFaceNet(tuple(m["tasks"]), float(m["width"]), split_bn=bool(m.get("split_bn", False)),
                                 attr_trunk=str(m.get("attr_trunk", "shared")),
                                 attr_width=float(m.get("attr_width", 1.5))).to(self.device)
        # channels-last suits cuDNN's tensor-core convolutions; on CPU the default is faster.
        self._channels_last = self.device.type == "cuda" and str(t.get("channels_last", "auto")) in ("auto", "true", "True")
        if self._channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if cfg["model"]["init"] and not resume:
            init = torch.load(cfg["model"]["init"], map_location="cpu", weights_only=True)
            missing, unexpected = self.model.load_state_dict(init["model"], strict=False)
            if missing or unexpected:
                warnings.warn(f"init {cfg['model']['init']}: {len(missing)} missing, {len(unexpected)} unexpected keys", stacklevel=2)

        det = self.stream.det_walk.per_step > 0
        self.units = tuple(u for u in TASK_UNITS if (u in DET_UNITS and det) or u in self.model.tasks)
        w = cfg["weighting"]
        self.weighting = build_weighting(w["method"], self.units, w).to(self.device)

        decay, no_decay = [], []
        for p in self.model.parameters():
            (decay if p.ndim > 1 else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": t["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
        wparams = list(self.weighting.parameters())
        if wparams:
            groups.append({"params": wparams, "weight_decay": 0.0, "lr": w["lr"] or t["lr"]})
        self.opt = torch.optim.AdamW(groups, lr=t["lr"])
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lr_lambda(int(t["warmup_steps"]), int(t["max_steps"]), float(t["min_lr_ratio"])))

        self.expr_offsets = {}
        n = 0
        for name, recs in self.stream.faces.items():
            if recs and "expression" in recs[0].labels:
                self.expr_offsets[name] = n
                n += len(recs)
        r = cfg["resup"]
        self.resup = ReSup(n, r["warmup_steps"], r["em_iters"], r["min_weight"]) if (
            r["enabled"] and n and "expression" in self.model.tasks) else None
        dm = cfg["dm"]
        self.dm = DistributionMatching(dm["pairs"], dm["symmetric"], dm["stop_grad"]) if dm["enabled"] else None
        pairs_ok = self.dm is not None and any(p["a"] in self.model.tasks and p["b"] in self.model.tasks for p in dm["pairs"])
        self.dm = self.dm if pairs_ok else None

        self.loss_cfg = dict(cfg["loss"])
        if float(self.loss_cfg.get("expression_logit_adjust", 0.0)) > 0 and self.expr_offsets:
            self.loss_cfg["expression_log_prior"] = expression_log_prior(self.stream)

        self.step = 0
        self._stop = False
        self._acc: dict[str, list[float]] = {}
        self.history: list[dict] = []
        self.metrics_path = self.out / "metrics.csv"
        self.columns = (["step", "time", "lr", "total", "dm", "num_pos"] + [f"loss_{u}" for u in self.units]
                        + [f"w_{u}" for u in self.units]
                        + ([f"logvar_{u}" for u in self.units] if isinstance(self.weighting, UncertaintyWeighting) else [])
                        + (["resup_clean_mean", "resup_noisy_mean", "resup_clean_share", "resup_mean_weight"] if self.resup else []))
        if resume:
            self.load(self.out / "last.pt")
        self._init_metrics()

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "config": self.model.config,
            "train_config": self.cfg,
            "step": self.step,
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "weighting": self.weighting.state_dict(),
            "resup": self.resup.state_dict() if self.resup else None,
            "rng": rng_state(),
            "data_position": {"step": self.step, "epochs": self.stream.epochs(self.step)},
        }

    def save(self, path: str | Path | None = None) -> Path:
        path = Path(path) if path else self.out / "last.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)
        return path

    def load(self, path: str | Path) -> None:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        self.weighting.load_state_dict(ckpt["weighting"])
        if self.resup and ckpt.get("resup"):
            self.resup.load_state_dict(ckpt["resup"])
        set_rng_state(ckpt["rng"])
        self.step = int(ckpt["step"])

    def _init_metrics(self) -> None:
        rows = []
        if self.step > 0 and self.metrics_path.is_file():
            with open(self.metrics_path, newline="", encoding="utf-8") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= self.step]
        with open(self.metrics_path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    # ------------------------------------------------------------------ one step

    def _autocast(self):
        """bf16 autocast on CUDA (``train.amp``: "auto" = on CUDA, "off", "bf16")."""
        mode = str(self.cfg["train"].get("amp", "auto"))
        on = self.device.type == "cuda" and mode in ("auto", "bf16")
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=on)

    def _layout(self, x):
        return x.contiguous(memory_format=torch.channels_last) if self._channels_last else x

    def _expression_weights(self, batch: dict, out: dict):
        """ReSup: record this batch's similarities, return per-sample weights [N]."""
        attr = batch["attr"]
        mask = attr["mask"]["expression"]
        if not bool(mask.any()):
            return None
        with torch.no_grad():
            probs = torch.softmax(out["expression_logits"].float(), 1).cpu().numpy()
        labels = attr["labels"]["expression"].numpy()
        idx = np.nonzero(mask.numpy())[0]
        sims = similarity(probs[idx], labels[idx])
        gidx = [self.expr_offsets[attr["dataset"][i]] + int(attr["index"][i]) for i in idx]
        w = np.ones(len(labels), np.float64)
        w[idx] = self.resup.weights(sims)
        self.resup.observe(gidx, sims)
        self._acc.setdefault("resup_mean_weight", []).append(float(w[idx].mean()))
        return torch.as_tensor(w, dtype=torch.float32, device=self.device)

    def train_step(self, batch: dict) -> dict:
        self.model.train()
        losses, present = {}, set()
        logs = {}
        if self.resup is not None:
            epochs = self.stream.epochs(batch["step"])
            epoch = max((epochs.get(n, 0) for n in self.expr_offsets), default=0)
            self.resup.maybe_refit(batch["step"], epoch)
        if batch.get("det") is not None:
            det = batch["det"]
            images = det["x"].to(self.device) if "x" in det else normalise(det["images"], self.device)
            with self._autocast():
                out = self.model.detect(self._layout(images))
            tg = batch_targets(det["boxes"], det["landmarks"], det["landmark_valid"], images.shape[2], images.shape[3],
                               topk=self.cfg["targets"]["topk"], anchor_sizes=tuple(self.cfg["targets"]["anchor_sizes"]),
                               fallback=self.cfg["targets"]["fallback"], device=self.device)
            dl = detection_losses({k: v.float() for k, v in out.items()}, tg, self.loss_cfg)
            logs["num_pos"] = float(dl.pop("num_pos"))
            losses.update(dl)
            present.add("det_score")
            if logs["num_pos"] > 0:
                present.add("det_box")
            if bool(tg["landmark_mask"].any()):
                present.add("det_landmarks")
        dm_loss = None
        if batch.get("attr") is not None:
            attr = batch["attr"]
            crops = attr["x"].to(self.device) if "x" in attr else normalise(attr["images"], self.device)
            with self._autocast():
                out = self.model.attributes(self._layout(crops))
            out = {k: v.float() for k, v in out.items()}
            labels = {k: v.to(self.device) for k, v in attr["labels"].items()}
            mask = {k: v.to(self.device) for k, v in attr["mask"].items()}
            weights = {}
            if self.resup is not None and "expression" in mask:
                w = self._expression_weights(batch, out)
                if w is not None:
                    weights["expression"] = w
            al = attribute_losses(out, labels, mask, self.loss_cfg, weights)
            losses.update(al)
            present.update(t for t in al if bool(mask[t].any()))
            if self.dm is not None:
                dm_loss = self.dm(out)
        total = self.weighting(losses, present)
        if dm_loss is not None:
            total = (total if total is not None else 0.0) + self.cfg["dm"]["weight"] * dm_loss
        self.opt.zero_grad(set_to_none=True)
        if total is not None and torch.is_tensor(total):
            total.backward()
            clip = float(self.cfg["train"]["grad_clip"])
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.opt.step()
        self.sched.step()
        self.weighting.end_step()
        self.step = batch["step"] + 1
        logs["total"] = float(total.detach()) if torch.is_tensor(total) else float("nan")
        logs["dm"] = float(dm_loss.detach()) if dm_loss is not None else float("nan")
        for u in present:
            logs[f"loss_{u}"] = float(losses[u].detach())
        return logs

    # ------------------------------------------------------------------ loop

    def _accumulate(self, logs: dict) -> None:
        for k, v in logs.items():
            if not (isinstance(v, float) and math.isnan(v)):
                self._acc.setdefault(k, []).append(v)

    def _write_row(self, t0: float) -> dict:
        row = {"step": self.step, "time": round(time.monotonic() - t0, 2), "lr": self.opt.param_groups[0]["lr"]}
        for k, v in self._acc.items():
            row[k] = sum(v) / len(v)
        for u, w in self.weighting.weights().items():
            row[f"w_{u}"] = w
        if isinstance(self.weighting, UncertaintyWeighting):
            for u, s in self.weighting.log_variances().items():
                row[f"logvar_{u}"] = s
        if self.resup:
            row.update(self.resup.summary())
        self._acc = {}
        with open(self.metrics_path, "a", newline="", encoding="utf-8") as fh:
            csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore").writerow(row)
        self.history.append(row)
        return row

    def _on_signal(self, signum, frame):  # noqa: ARG002
        self._stop = True

    def run(self) -> str:
        """Train to ``train.max_steps`` (or ``train.stop_after``); returns "done",
        "stopped" (stop_after reached) or "interrupted" (signal)."""
        from tqdm import tqdm

        t = self.cfg["train"]
        stop = int(t["max_steps"])
        if int(t["stop_after"]) > 0:
            stop = min(stop, int(t["stop_after"]))
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        t0 = last_ckpt = time.monotonic()
        status = "error"
        bar = tqdm(total=int(t["max_steps"]), initial=self.step, disable=self.quiet, dynamic_ncols=True)
        try:
            # A stream that lives on the GPU is cut in this process (workers would each need the cache there).
            workers = 0 if getattr(self.stream, "device", None) is not None and self.stream.device.type != "cpu" \
                else int(self.cfg["data"]["workers"])
            loader = make_loader(self.stream, self.step, stop, workers)
            for batch in loader:
                logs = self.train_step(batch)
                self._accumulate(logs)
                bar.update(1)
                if self.step % int(t["log_every"]) == 0 or self.step == stop:
                    row = self._write_row(t0)
                    bar.set_postfix({SHORT.get(k[5:], k[5:]) if k.startswith("loss_") else k: f"{v:.3g}"
                                     for k, v in row.items() if k.startswith("loss_") or k == "total"}, refresh=False)
                if int(t["plot_every"]) > 0 and self.step % int(t["plot_every"]) == 0:
                    plot_metrics(self.metrics_path, self.out / "metrics.png")
                if time.monotonic() - last_ckpt >= 60.0 * float(t["checkpoint_minutes"]):
                    self.save()
                    last_ckpt = time.monotonic()
                limit = float(t.get("time_limit_minutes", 0) or 0)
                if limit > 0 and time.monotonic() - t0 >= 60.0 * limit:
                    break  # checkpointed below; --resume continues the same schedule
                if self._stop:
                    break
            status = "interrupted" if self._stop else ("done" if self.step >= int(t["max_steps"]) else "stopped")
        finally:
            bar.close()
            for s, h in old.items():
                signal.signal(s, h)
            if self._acc:
                self._write_row(t0)
            self.save()
            if status == "done":
                from omniface.nn.model import save_checkpoint

                save_checkpoint(self.model, self.out / "model.pt", step=self.step)
            plot_metrics(self.metrics_path, self.out / "metrics.png")
        return status
