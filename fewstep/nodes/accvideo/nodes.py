"""AccVideo nodes: the SynVid trajectory dataset, the student trainer, the 5-step key-point sampler and the
shipped-student loader (all on the built-in VIDEO_MODEL)."""

from __future__ import annotations

from typing import Any

from fewstep.app.api import (
    Combo,
    Float,
    Int,
    Link,
    Node,
    NodeOutput,
    Output,
    Schema,
    String,
)
from fewstep.nodes.core.train.seeds import fixed_seed
from fewstep.nodes.core.video_nodes import prompt_video, report_step, require_prompt, video_sampler_output

CATEGORY = "fewstep/video/accvideo"
SYNVID = "ACCVIDEO_SYNVID"   # fewstep.nodes.accvideo.synvid.SynVidStore: key points [N, 6, T, C, h, w] + prompts
VIDEO_MODEL = "VIDEO_MODEL"
LIST_PROMPTS = "a small red circle moving right\na large blue square bouncing"
ADVERSARIAL = ["per_timestep", "shared", "off"]
DATA_POINTS = ["trajectory", "forward_diffused"]


class AccVideoSynVid(Node):
    """The teacher's own 50-step trajectories (shift 7), key points kept: AccVideo's SynVid, resumable."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="AccVideoSynVid", display_name="AccVideo SynVid (teacher trajectories)", category=CATEGORY,
            description="Runs the teacher's 50-step flow Euler (shift 7, CFG) from noise on the training captions and "
                        "stores the points at steps 0, 10, 20, 30, 40, 50 (t' = 1, .9655, .9130, .8235, .6364, 0) "
                        "with the prompts, as safetensors shards in <models>/checkpoints/accvideo_synvid/<name>-<hash>; "
                        "a re-run with the same settings resumes. 64 trajectories take about 10 s on one CPU core.",
            inputs=[Link("video_model", VIDEO_MODEL, tooltip="the teacher (built-in video model)"),
                    Combo("prompt_source", ["procedural", "list"], default="procedural",
                          tooltip="procedural: training captions of the clip grammar; list: the prompts below"),
                    String("prompts", LIST_PROMPTS, multiline=True, tooltip="one prompt per line (list)"),
                    Int("prompt_count", 321, min=1, max=1_000_000, tooltip="procedural captions (321 in the split)"),
                    Int("trajectory_count", 1536, min=1, max=100_000_000,
                        tooltip="trajectories (paper: 110K HunyuanVideo clips; demo graph: 32)"),
                    Float("cfg", 4.0, min=1.0, max=30.0, step=0.1, tooltip="teacher CFG, distilled into the student"),
                    Int("frames", 8, min=1, max=16), fixed_seed(tooltip="noise and prompt draws; part of the identity"),
                    String("name", "synvid", tooltip="folder name under <models>/checkpoints/accvideo_synvid")],
            outputs=[Output("SYNVID", SYNVID)])

    @classmethod
    def execute(cls, video_model: Any, prompt_source: str, prompts: str, prompt_count: int, trajectory_count: int,
                cfg: float, frames: int, seed: int, name: str) -> NodeOutput:
        from fewstep.nodes.accvideo.graph import make_synvid, training_captions

        texts = training_captions(prompt_source, prompts, prompt_count, seed)
        return NodeOutput(make_synvid(video_model, texts, count=trajectory_count, cfg=cfg, frames=frames, seed=seed,
                                      name=name, progress=report_step))


class AccVideoDistill(Node):
    """A 5-step student: trajectory loss between key points + adversarial training at each key timestep."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="AccVideoDistill", display_name="AccVideo Distill (few-step video student)", category=CATEGORY,
            description="Student = copy of the teacher. Per key timestep k (t'_5 = 1 ... t'_0 = 0): one update with "
                        "L_traj (the velocity whose Euler step lands on the teacher's next key point), then one update "
                        "of the student and the discriminator head H_k with 0.1 x the GAN loss (frozen teacher "
                        "features + conv head; generated latents from the latent queues). Checkpoints into "
                        "<models>/checkpoints/distill; a re-run with the same settings resumes. The template graph is a "
                        "CPU demo (steps 6, batch 4); the shipped student: steps 150, batch 16 on SynVid of 1536.",
            inputs=[Link("video_model", VIDEO_MODEL, tooltip="the teacher that made the SynVid"),
                    Link("synvid", SYNVID),
                    Int("steps", 150, min=1, max=10_000_000,
                        tooltip="paper iterations (each: 5 L_traj updates, plus 5 adversarial ones unless off)"),
                    Int("batch_size", 16, min=1, max=4096),
                    Float("learning_rate", 1e-4, min=0.0, max=1.0, step=1e-6, round=1e-7,
                          tooltip="student AdamW lr (paper: 5e-6 on a 13B model)"),
                    Combo("adversarial", ADVERSARIAL, default="per_timestep",
                          tooltip="per_timestep: one head per key timestep (paper); shared: one head; off: L_traj only"),
                    Combo("data_points", DATA_POINTS, default="trajectory",
                          tooltip="trajectory: SynVid key points (paper); forward_diffused: noised real clips "
                                  "(the 'useless data points' control)"),
                    Float("adv_weight", 0.1, min=0.0, max=10.0, step=0.01, tooltip="λ_adv (paper: 0.1)"),
                    Float("head_lr_ratio", 10.0, min=0.01, max=1000.0, step=0.1, tooltip="heads' lr / student lr"),
                    fixed_seed(),
                    String("run_name", "accvideo", tooltip="checkpoints: <models>/checkpoints/distill/<run_name>-<hash>"),
                    Int("checkpoint_every", 50, min=0, max=10_000_000, tooltip="in iterations")],
            outputs=[Output("VIDEO_MODEL", VIDEO_MODEL)])

    @classmethod
    def execute(cls, video_model: Any, synvid: Any, steps: int, batch_size: int, learning_rate: float, adversarial: str,
                data_points: str, adv_weight: float, head_lr_ratio: float, seed: int, run_name: str,
                checkpoint_every: int) -> NodeOutput:
        from fewstep.nodes.accvideo.graph import distill
        from fewstep.nodes.accvideo.train import AccVideoConfig

        cfg = AccVideoConfig(steps=steps, batch_size=batch_size, lr=learning_rate, warmup=min(20, steps),
                             adversarial=adversarial, data_points=data_points, adv_weight=adv_weight,
                             head_lr_ratio=head_lr_ratio, seed=seed)
        student, losses = distill(video_model, synvid, cfg, run_name=run_name, checkpoint_every=checkpoint_every)
        return NodeOutput(student, ui={"loss": losses})


class AccVideoSampler(Node):
    """5 flow-Euler steps between AccVideo's key points (1, .9655, .9130, .8235, .6364, 0)."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(
            node_id="AccVideoSampler", display_name="AccVideo Sampler (5 key-point steps)", category=CATEGORY,
            description="Text to video in 5 Euler steps at the key timesteps of the shift-7 50-step grid. A student "
                        "samples with cfg 1 (guidance is distilled in); the teacher at cfg 4 gives the blurry "
                        "5-step baseline.",
            inputs=[Link("video_model", VIDEO_MODEL),
                    String("prompt", "a small red circle moving right", multiline=True),
                    Int("frames", 8, min=1, max=16),
                    Float("cfg", 1.0, min=1.0, max=30.0, step=0.1, tooltip="1 for a student; 4 for the teacher"),
                    Int("seed", 0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True)],
            outputs=[Output("VIDEO", "VIDEO"), Output("IMAGE", "IMAGE")])

    @classmethod
    def execute(cls, video_model: Any, prompt: str, frames: int, cfg: float, seed: int) -> NodeOutput:
        from fewstep.nodes.accvideo.graph import sample

        require_prompt(prompt, "AccVideo Sampler")
        settings = f"{video_model.name}: AccVideo 5 key-point Euler steps, cfg {cfg:g}, seed {seed}"

        def run(progress: Any) -> Any:
            out, _ = sample(video_model, [prompt], frames=frames, seed=seed, cfg=cfg, callback=progress)
            return prompt_video(out, video_model.fps, prompt, settings)

        return video_sampler_output(5, run)


def _shipped() -> list[str]:
    from fewstep.nodes.accvideo.graph import shipped_students

    return shipped_students()


class AccVideoStudentLoader(Node):
    """The shipped AccVideo student of the built-in video model as a VIDEO_MODEL."""

    @classmethod
    def define_schema(cls) -> Schema:
        return Schema(node_id="AccVideoStudentLoader", display_name="Load AccVideo Student", category=CATEGORY,
                      inputs=[Combo("student_name", _shipped, tooltip="fewstep/nodes/accvideo/weights")],
                      outputs=[Output("VIDEO_MODEL", VIDEO_MODEL)])

    @classmethod
    def execute(cls, student_name: str) -> NodeOutput:
        from fewstep.nodes.accvideo.graph import load_student
        from fewstep.nodes.core.loaders import pick_device

        return NodeOutput(load_student(student_name, pick_device()[0]))


NODES: tuple[type[Node], ...] = (AccVideoSynVid, AccVideoDistill, AccVideoSampler, AccVideoStudentLoader)
