"""Cohen et al. 2022, "Adaptive gradient methods at the edge of stability", reproduced: full-batch
Adam (beta1 = 0.9) on the fc-tanh with the square loss, on 2,000 real CIFAR-10 images, at two step
sizes. The preconditioned sharpness lambda_max(P^-1 H), with P the preconditioner of Adam's next
update, rises to (2 + 2 beta1) / ((1 - beta1) eta) = 38 / eta and equilibrates there; the plain
sharpness lambda_max(H) is recorded beside it and is not regulated.

    python benchmarks/eos_adam.py [--data ../shared/data/cifar10_head.npz] [--quick]

Passes when the median of lambda_max(P^-1 H) / (38 / eta) over the last 30% of the updates lies
within [0.9, 1.2] at both step sizes (exit status 0; 1 otherwise). About 8 minutes on 2 CPU cores.
The figure goes to docs/research/eos_adam.png.
"""

import sys

from edge_of_stability import reproduce

STEP_SIZES = {"eta = 2e-4": (2e-4, 600), "eta = 1e-4": (1e-4, 1000)}  # step size, updates

if __name__ == "__main__":
    sys.exit(reproduce(__doc__, "eos_adam.png", STEP_SIZES, ["optimizer=adam", "optimizer.betas=[0.9,0.999]", "optimizer.weight_decay=0"],
                       "adam", "preconditioned_sharpness", "lambda_max(P^-1 H)",
                       "Adam trains at the adaptive edge of stability, lambda_max(P^-1 H) ~ 38 / eta",
                       "Full-batch Adam (beta1 = 0.9), fc-tanh, square loss, 2,000 CIFAR-10 images: the preconditioned sharpness "
                       "rises to 38 / eta"))
