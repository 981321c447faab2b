"""Chapter 2: 3D-GAN, voxel shapes."""
