"""Chapter 5: SRGAN, 4x photo super-resolution with a VGG19 perceptual loss."""
