"""One run: the run folder that owns every path (`folder`), the pipeline's artifacts (`pipeline`) and its stages (`stages`)."""


def __getattr__(name):  # Pipeline imports torch and transformers: only when asked for
    if name in ("Pipeline", "run_stages"):
        from prefdistill.run import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
