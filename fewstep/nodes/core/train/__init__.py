"""The shared training core of the distillation packs (mlcm, slam, tdm, r0, pso, mixdq).

Modules, each written once:
    ``vp``            the DDPM schedule type (:class:`~.vp.DiscreteVPSchedule`, shared with the samplers), VPNet
                      views, CFG, DDIM, LCM boundary scalings, pseudo-Huber;
    ``batches``       distillation batches, seeded draws, data-free teacher states, forward noising;
    ``consistency``   the consistency samplers' timestep subsets (LCM skip grid, MLCM milestones) and walk;
    ``flow_consistency`` multistep consistency on a rectified-flow path (segments of a teacher grid, the flow
                      DDIM jump, data-free teacher states): Efficient-vDiT's MLCD of the video DiT;
    ``gamma``         a scalar condition through the UNet's w-embedding slot (SLAM's γ input, fold-out);
    ``prompts``       prompt sources and the encoded prompt pool;
    ``adapter``       MODEL / CLIP → training views, the UNet call, LoRA targets, student MODELs;
    ``builtin``       the built-in teacher and the shipped-student file format;
    ``loop``          the resumable deterministic loop, checkpoints, EMA, LoRA, fingerprints, LR schedules;
    ``distill``       the consistency-distillation run (config, presets, student, :func:`~.distill.distill`);
    ``distill_graph`` the trainer nodes' shared widgets and body (run folder, resume, previews, live loss);
    ``toy``           an analytic Gaussian-mixture teacher for fast tests.
Nothing here imports a method pack; the packs bring their losses.
"""
