"""Small tools around the models: the scripts' command-line plumbing (`cli`), Hub model cards (`model_card`),
figures (`plotting`) and the benchmarks' helpers (`benchmark`)."""
