"""Differentiable rendering in torch (CPU and GPU), shared by the 3D packs.

- :mod:`.camera`: pinhole cameras by azimuth / elevation / distance (look-at), intrinsics from a field of view;
- :mod:`.raster`: soft mesh rasterisation (SoftRas): silhouettes, depth-ordered colour and depth;
- :mod:`.volume`: volume rendering of SDF / colour fields (VolSDF or NeuS density), stratified and importance
  samples, alpha compositing to RGB, opacity and depth;
- :mod:`.triplane`: triplane feature fields [3, C, R, R] and their MLP decoder to SDF and colour.
"""
