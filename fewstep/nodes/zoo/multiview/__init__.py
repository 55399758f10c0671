"""The built-in multi-view teacher: a camera-conditioned diffusion UNet trained on renders of coloured primitives.

- ``data``:     24 procedural primitives (6 colours x 4 shapes) as analytic SDFs, their captions, and views
                rendered by ``nodes.core.render`` at 16 px from orbit cameras;
- ``models``:   the teacher's UNet (``MVUNet``: caption and camera added to the time embedding), the loaded
                ``Teacher`` (ε and x̂0 on the VP schedule) and a DDIM + CFG sampler of views;
- ``evaluate``: the caption probe (reads colour and shape back from a render) and the teacher's probe accuracy;
- ``train``:    the recipe that trains probe and teacher (``python -m fewstep.nodes.zoo.multiview.train``);
- ``builtin``:  the shipped weights (``fewstep-tiny-mv-teacher``, ``fewstep-tiny-mv-probe`` in
                ``nodes/zoo/weights``), the caption embedder (MiniLM) and the loader's bundle;
- ``nodes``:    the loader node.

The PRD pack (``nodes/prd``) distils a text → triplane generator from this teacher.
"""
