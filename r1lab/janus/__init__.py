"""Janus in miniature (arXiv:2410.13848; Janus-Pro, arXiv:2501.17811): one r1lab Transformer that
understands images (a patch encoder + adaptor into its embedding space) and generates them
(VQ codes predicted through its own image embedding and head), on procedural scenes and
scikit-learn's 8x8 digits. ``scenes``/``digits``: data, exact checks; ``vq``: the tokenizer;
``model``: the unified model and its samplers."""
