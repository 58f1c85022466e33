// placeholder for build warmup
