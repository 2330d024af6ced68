"""Process plumbing for Freqtrade: the child processes that run backtests and hyperopt trials, the
pre-forked worker (zygote) they fork from, and what crosses between them."""
