# Job backend for parallel data jobs (--nj): "local" runs them on this machine;
# "slurm <srun options>" runs each job through srun, e.g.
#   data_cmd="slurm -p cpu --mem 8G --time 4:00:00"
data_cmd="local"
