"""The bench: its plan of jobs (`plan`), the runner (`runner`), the typed records its jobs leave (`records`), the numbers
it reports (`numbers`) and its cost (`resources`)."""


def __getattr__(name):  # the runner imports torch and transformers: only when asked for
    if name == "Bench":
        from prefdistill.bench import runner

        return runner.Bench
    raise AttributeError(name)
