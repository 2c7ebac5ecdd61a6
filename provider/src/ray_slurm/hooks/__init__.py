"""What runs inside Ray's own processes: the private temp root and the safe import path (a start-up
hook of the Ray environment), and the autoscaler loop's wake-up on new demand."""
