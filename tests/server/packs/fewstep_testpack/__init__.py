"""A small node pack for the server and browser tests: every node does real work (files on disk,
progress, previews) so each editor extension has a genuine producer.

Nodes: SolidImage (IMAGE), SaveTestImage (PNG output), ImageStats (METRICS table), TrainToy (a tiny
least-squares fit whose loss is reported through progress), SaveTestVideo (animated WebP), Preview3D
(an OBJ mesh shown by the editor's own 3D viewer) and SlowCount (long, interruptible, with previews).
"""

from __future__ import annotations

import time
from pathlib import Path

from fewstep.app.api import (
    Float,
    Input,
    Int,
    Link,
    Node,
    NodeOutput,
    Output,
    Schema,
    String,
    current_context,
    current_paths,
)


def _save_png(image, prefix: str) -> dict:
    """Write ``image`` ([B,H,W,C] float tensor, first item) as PNG under output/; returns its ui entry."""
    from PIL import Image

    out_dir = current_paths().output_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    index = len(list(out_dir.glob(f"{prefix}_*.png")))
    name = f"{prefix}_{index:05d}.png"
    pixels = (image[0].clamp(0, 1) * 255).round().byte().cpu().numpy()  # [H, W, C] uint8
    Image.fromarray(pixels).save(out_dir / name)
    return {"filename": name, "subfolder": "", "type": "output"}


class SolidImage(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SolidImage", category="fewstep/test", description="A solid-colour image.",
                      inputs=[Int("width", 64, min=8, max=1024), Int("height", 64, min=8, max=1024),
                              Float("red", 0.9, min=0, max=1), Float("green", 0.4, min=0, max=1),
                              Float("blue", 0.1, min=0, max=1)],
                      outputs=[Output("IMAGE", "IMAGE")])

    @classmethod
    def execute(cls, width: int, height: int, red: float, green: float, blue: float) -> NodeOutput:
        import torch

        image = torch.tensor([red, green, blue]).expand(1, height, width, 3).clone()  # [1, H, W, 3]
        return NodeOutput(image)


class SaveTestImage(Node):
    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SaveTestImage", category="fewstep/test", is_output_node=True,
                      inputs=[Link("images", "IMAGE"), String("filename_prefix", "fewstep_test")])

    @classmethod
    def execute(cls, images, filename_prefix: str) -> NodeOutput:
        return NodeOutput(ui={"images": [_save_png(images, filename_prefix)]})


class ImageStats(Node):
    """Mean and extremes of an image as METRICS, shown as a table by the editor extension."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="ImageStats", category="fewstep/test", is_output_node=True,
                      inputs=[Link("images", "IMAGE")], outputs=[Output("METRICS", "METRICS")])

    @classmethod
    def execute(cls, images) -> NodeOutput:
        metrics = {"mean": round(float(images.mean()), 4), "min": round(float(images.min()), 4),
                   "max": round(float(images.max()), 4), "pixels": int(images.shape[1] * images.shape[2])}
        return NodeOutput(metrics, ui={"metrics": [metrics]})


class TrainToy(Node):
    """Fits y = 3x + 1 by gradient descent; the loss of each step goes out through progress."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="TrainToy", category="fewstep/test", is_output_node=True,
                      inputs=[Int("steps", 20, min=1, max=10000), Float("lr", 0.1, min=1e-5, max=1.0)],
                      outputs=[Output("METRICS", "METRICS")])

    @classmethod
    def execute(cls, steps: int, lr: float) -> NodeOutput:
        import torch

        x = torch.linspace(-1, 1, 64)
        y = 3 * x + 1
        w, b = torch.zeros(()), torch.zeros(())
        losses = []
        context = current_context()
        for step in range(steps):
            err = w * x + b - y
            loss = float((err ** 2).mean())
            w, b = w - lr * 2 * float((err * x).mean()), b - lr * 2 * float(err.mean())
            losses.append(loss)
            if context is not None:
                context.extra["loss"] = loss
                context.progress(step + 1, steps)
        metrics = {"final_loss": round(losses[-1], 6), "w": round(float(w), 4), "b": round(float(b), 4)}
        return NodeOutput(metrics, ui={"metrics": [metrics], "loss": losses})


class SaveTestVideo(Node):
    """A short animated WebP (a moving bar): the VIDEO preview extension plays it."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SaveTestVideo", category="fewstep/test", is_output_node=True,
                      inputs=[Int("frames", 8, min=2, max=64), Float("fps", 8.0, min=1, max=60)])

    @classmethod
    def execute(cls, frames: int, fps: float) -> NodeOutput:
        from PIL import Image, ImageDraw

        images = []
        for t in range(frames):
            frame = Image.new("RGB", (64, 48), (20, 20, 30))
            ImageDraw.Draw(frame).rectangle([t * 64 // frames, 10, t * 64 // frames + 8, 38], fill=(250, 200, 0))
            images.append(frame)
        out_dir = current_paths().output_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        name = f"fewstep_video_{len(list(out_dir.glob('fewstep_video_*.webp'))):05d}.webp"
        images[0].save(out_dir / name, save_all=True, append_images=images[1:],
                       duration=int(1000 / fps), loop=0)
        return NodeOutput(ui={"video": [{"filename": name, "subfolder": "", "type": "output",
                                         "format": "image/webp", "fps": fps}]})


class Preview3D(Node):
    """Writes a tetrahedron as OBJ under output/3d and hands it to the editor's 3D viewer, which the
    editor attaches to any node class named ``Preview3D`` (input ``model_file``, ui ``result``)."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="Preview3D", category="fewstep/test", is_output_node=True,
                      inputs=[String("model_file", "", optional=True), Float("scale", 1.0, min=0.01, max=100)])

    @classmethod
    def execute(cls, scale: float, model_file: str = "") -> NodeOutput:
        folder = current_paths().output_dir / "3d"
        folder.mkdir(parents=True, exist_ok=True)
        vertices = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]
        faces = [(1, 3, 2), (1, 2, 4), (1, 4, 3), (2, 3, 4)]   # OBJ indices are 1-based
        (folder / "fewstep_mesh.mtl").write_text("newmtl fewstep\nKd 0.9 0.5 0.1\n")
        lines = ["mtllib fewstep_mesh.mtl", "usemtl fewstep"]
        lines += [f"v {x * scale} {y * scale} {z * scale}" for x, y, z in vertices]
        lines += [f"f {a} {b} {c}" for a, b, c in faces]
        Path(folder / "fewstep_mesh.obj").write_text("\n".join(lines) + "\n")
        return NodeOutput(ui={"result": ["3d/fewstep_mesh.obj"]})


class SlowCount(Node):
    """Counts to ``steps`` with a pause per step and a preview image: long and interruptible."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="SlowCount", category="fewstep/test", is_output_node=True, not_idempotent=True,
                      inputs=[Int("steps", 50, min=1, max=100000), Float("delay", 0.05, min=0, max=10),
                              Input("tag", "STRING", default="", optional=True)],
                      outputs=[Output("INT", "INT")])

    @classmethod
    def execute(cls, steps: int, delay: float, tag: str = "") -> NodeOutput:
        from PIL import Image

        context = current_context()
        for step in range(steps):
            time.sleep(delay)
            if context is not None:
                shade = int(255 * (step + 1) / steps)
                context.progress(step + 1, steps, Image.new("RGB", (32, 32), (shade, 0, 255 - shade)))
        return NodeOutput(steps, ui={"text": [f"counted to {steps}"]})


class Explode(Node):
    """Always fails: exercises execution_error."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="Explode", category="fewstep/test", is_output_node=True,
                      inputs=[String("why", "boom")])

    @classmethod
    def execute(cls, why: str) -> NodeOutput:
        raise ValueError(f"exploded: {why}")


class Deaf(Node):
    """Sleeps without ever checking for interrupts, like one huge matrix multiply: only killing its process
    ends it early."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="Deaf", category="fewstep/test", is_output_node=True, not_idempotent=True,
                      inputs=[Float("seconds", 600.0, min=0, max=100000)])

    @classmethod
    def execute(cls, seconds: float) -> NodeOutput:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.05)
        return NodeOutput(ui={"text": ["woke up"]})


class Crash(Node):
    """Ends its process at once (a segfault or the kernel's OOM killer, as the worker sees it)."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="Crash", category="fewstep/test", is_output_node=True, not_idempotent=True,
                      inputs=[Int("code", 3, min=0, max=255)])

    @classmethod
    def execute(cls, code: int) -> NodeOutput:
        import os

        os._exit(code)


def entrypoint() -> list[type]:
    return [SolidImage, SaveTestImage, ImageStats, TrainToy, SaveTestVideo, Preview3D, SlowCount, Explode, Deaf,
            Crash]
