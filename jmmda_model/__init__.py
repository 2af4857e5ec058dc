"""JMMDA-GAN: Joint Mask and Multi-Frequency Dual Attention GAN for CT-to-DWI synthesis.

Research software. Every image it produces is SYNTHETIC and not for diagnosis.
"""
__version__ = "0.2.0"

SYNTHETIC_LABEL = "SYNTHETIC DWI - not for diagnosis"
