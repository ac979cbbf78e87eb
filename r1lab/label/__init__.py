"""Label the steps of reasoning traces: traces in (``traces``), a durable label file (``store``),
the web page (``app``) and inter-annotator agreement (``agreement``)."""
