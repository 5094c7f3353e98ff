"""Cohen et al. 2021, "Gradient descent on neural networks typically occurs at the edge of
stability", reproduced: full-batch gradient descent on their fc-tanh with the square loss, on 2,000
real CIFAR-10 images, at two step sizes. The sharpness lambda_max(H) rises (progressive
sharpening) until it reaches 2 / eta, then hovers there while the loss keeps falling, non-monotonically.

    python benchmarks/eos_gradient_descent.py [--data ../shared/data/cifar10_head.npz] [--quick]

Passes when the median of lambda_max * eta / 2 over the last 30% of the updates lies within
[0.9, 1.2] at both step sizes (exit status 0; 1 otherwise). About 12 minutes on 2 CPU cores.
The figure goes to docs/research/eos_gradient_descent.png.
"""

import sys

from edge_of_stability import reproduce

STEP_SIZES = {"eta = 2/100": (0.02, 1500), "eta = 2/150": (2 / 150, 2500)}  # step size, updates (sharpening takes longer at 2/150)

if __name__ == "__main__":
    sys.exit(reproduce(__doc__, "eos_gradient_descent.png", STEP_SIZES, ["optimizer=sgd", "optimizer.momentum=0", "optimizer.weight_decay=0"],
                       "gd", "sharpness", "lambda_max(H)", "gradient descent trains at the edge of stability, lambda_max(H) ~ 2 / eta",
                       "Full-batch gradient descent, fc-tanh, square loss, 2,000 CIFAR-10 images: the sharpness rises to 2 / eta"))
