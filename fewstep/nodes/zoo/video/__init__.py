"""The built-in video model: procedural clips, the rectified-flow video DiT, its recipe and metrics.

- ``clips``:    one shape of ``nodes.zoo.data``'s vocabulary moving in a 64x64 clip, its caption, splits;
- ``dit``:      the video DiT (full 3D attention over (frame, h, w) latent tokens, swappable attention);
- ``model``:    the shipped model as a bundle (DiT + built-in VAE + MiniLM) and text-to-video generation;
- ``tracker``:  the analytic motion tracker (centroid of the object's colour mask per frame);
- ``features``: the small 3D-conv clip classifier whose features give the temporal Fréchet distance;
- ``evaluate``: quality on held-out captions; ``train``: the training recipe; ``nodes``: loader and sampler.
"""
