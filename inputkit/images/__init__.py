"""Images: per-sample transforms that turn an encoded image of any size into a fixed-size array.

``transforms`` parses and samples the geometric steps (RandomResizedCrop, Resize,
CenterCrop, RandomHorizontalFlip) as one crop box per sample; ``decode`` decodes
an image and applies that box in a single resize, written straight into the
chunk's array. The image sources (``inputkit.sources.images``) use both.
"""
