package testnet

func SetParallelism(n int) { parallelism = n }
