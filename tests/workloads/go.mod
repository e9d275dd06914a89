module golens.dev/workloads

go 1.19
