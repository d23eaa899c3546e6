"""Image encoders: SAM's plain ViT and MobileSAM's TinyViT."""
