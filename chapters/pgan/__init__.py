"""Chapter 7: the Progressive GAN (Karras et al. 2018)."""
