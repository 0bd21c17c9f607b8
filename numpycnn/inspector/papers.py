"""Where each equation of the backward pass and of an update stands in the write-ups this
project grew from (``../shared/seeds``): Escontrela's network as the 2018 write-up presents
it (seed 001, "Escontrela" below), Rasheed and Zarkoosh's guide to derivatives (seed 002)
and Murugan's feed-forward and backward run (seed 000). Each rule: what it says in words,
then each paper's own notation and equation number where the paper numbers it. The page
shows these beside the numbers; the wording is ours, the symbols are the papers'.
"""

__all__ = ["EQUATIONS"]

ESC, RAS, MUR = "Escontrela (seed 001)", "Rasheed & Zarkoosh (seed 002)", "Murugan (seed 000)"

#: rule -> {"name", "words", "papers": [[paper, where, notation], ...]}
EQUATIONS = {
    "score": {
        "name": "the start of the pass for a class score",
        "words": "Q is one output z_k itself, so dQ/dz_j is 1 for j = k and 0 for the others.",
        "papers": [],
    },
    "softmax_cross_entropy": {
        "name": "softmax with cross-entropy: p - y",
        "words": "Cross-entropy after a softmax, differentiated through both: the gradient at "
        "the scores is the probability minus the one-hot label (divided by the batch size).",
        "papers": [
            [ESC, "eq. 22, 24, 25 combined", "∂ℓ/∂z_(c) = a_(c) − y_(c)"],
            [RAS, "eq. 29-30", "∂J/∂Z = A − Y"],
            [MUR, "eq. 3.43 (sigmoid output)", "∂L/∂b_i^L = σ(z_i^{L+1}) − y_i"],
        ],
    },
    "loss": {
        "name": "the loss's own derivative",
        "words": "The gradient of the model's loss with respect to its output, as the loss "
        "defines it, divided by the number of values it averages over.",
        "papers": [[MUR, "eq. 2.4-2.14, 3.26", "∂L(ŷ, y)/∂ŷ"]],
    },
    "dense_input": {
        "name": "a fully connected layer sends the gradient back through its weights",
        "words": "An input a_n feeds every unit k of the next layer with weight w_kn, so its "
        "gradient is the sum over those units of their gradient times that weight.",
        "papers": [
            [ESC, "§2.1", "∂ℓ/∂a^(l−1)_(c'') = Σ_c ∂ℓ/∂z^(l)_(c) · w^(l)_(c,c'')"],
            [RAS, "eq. 48", "∂J/∂Y_pool = ∂J/∂Z₂ · W"],
            [MUR, "eq. 3.62-3.64", "∂L/∂a^{l−1} = (∂L/∂z^l) W^l"],
        ],
    },
    "conv_input": {
        "name": "a convolution sends the gradient back through its kernels",
        "words": "An input value is read by every output position whose window covers it, "
        "once per filter, each time with a different kernel weight: its gradient is the sum of "
        "those outputs' gradients times the weight that read it.",
        "papers": [
            [
                ESC,
                "§2.2",
                "∂ℓ/∂a^(l−1)_(c'')(x'',y'') = Σ_c Σ_x Σ_y ∂ℓ/∂z^(l)_(c)(x,y) · "
                "w^(l)_(c,c'')(x''−x, y''−y)",
            ],
            [RAS, "eq. 62", "∂J/∂x_{i,j} = Σ_p Σ_q k_{p,q} · ∂J/∂Z_{1,i−p,j−q}"],
        ],
    },
    "maxpool": {
        "name": "max pooling routes the gradient to the maximum",
        "words": "Only the input that won its window moved the output, so it alone receives "
        "the window's gradient; the others get 0. On a tie the engine picks the first maximum "
        "in row order (as the reference's code does).",
        "papers": [
            [ESC, "§2.3, after eq. 18", "∂ℓ/∂a^(l−1) = ∂ℓ/∂a^(l) where a^(l−1) is the max, else 0"],
            [RAS, "eq. 49-50", "∂J/∂Y_relu = ∂J/∂Y_pool · M, M_{i,j,k} = 1 at the max"],
            [MUR, "eq. 3.65-3.66", "∂L/∂C^{p,q}_{m,n} = P^{p,q}"],
        ],
    },
    "avgpool": {
        "name": "average pooling shares the gradient equally",
        "words": "Each of the s x s inputs of a window moved the mean by 1/s², so each "
        "receives the window's gradient divided by s² (not in the three papers).",
        "papers": [],
    },
    "flatten": {
        "name": "flattening only reshapes",
        "words": "A flattened value is a copy of one input value, so the gradient is copied "
        "back to where it came from.",
        "papers": [[MUR, "eq. 3.65", "P^{p,q} = f⁻¹(∂L/∂a^{l−1})"]],
    },
    "relu": {
        "name": "the ReLU's mask",
        "words": "ReLU passes z where z > 0 and 0 elsewhere, so the gradient passes where the "
        "unit was active and stops where it was not (0 at the kink itself, as the reference's "
        "code: dconv[conv <= 0] = 0).",
        "papers": [
            [ESC, "eq. 21", "d ReLU(z)/dz = 1 if z ≥ 0, else 0"],
            [RAS, "eq. 51", "∂J/∂Z₁ = ∂J/∂Y_relu · (1 if z1_{i,j,k} > 0, else 0)"],
            [MUR, "eq. 3.52", "σ'(z) = 0 if z < 0, 1 if z ≥ 0"],
        ],
    },
    "leaky_relu": {
        "name": "the leaky ReLU's slope",
        "words": "The gradient passes where z > 0 and is scaled by alpha elsewhere "
        "(not in the three papers).",
        "papers": [],
    },
    "sigmoid": {
        "name": "the sigmoid's derivative",
        "words": "The sigmoid's slope is s(1 - s), from its own output.",
        "papers": [[MUR, "eq. 3.35-3.36", "∂σ(z)/∂z = σ(z)(1 − σ(z))"]],
    },
    "tanh": {
        "name": "tanh's derivative",
        "words": "tanh's slope is 1 - tanh², from its own output (not in the three papers).",
        "papers": [],
    },
    "softmax": {
        "name": "the softmax's Jacobian",
        "words": "Each probability depends on every score: dp_i/dz_j = p_i(δ_ij − p_j), so the "
        "gradient at z_i is p_i times (its own gradient minus the p-weighted mean gradient).",
        "papers": [
            [ESC, "§2.4", "∂a_(c)/∂z_(c) = a_(c)(1 − a_(c)), ∂a_(c)/∂z_(c') = −a_(c) a_(c')"],
            [RAS, "eq. 28", "∂a_i/∂z_j = a_i(1 − a_j) if i = j, −a_i a_j if i ≠ j"],
        ],
    },
    "conv_weight": {
        "name": "a kernel weight's gradient: input times output gradient, summed over positions",
        "words": "One weight is used at every output position of its filter, each time on a "
        "different input value, so its gradient is the sum over positions of that input value "
        "times the output's gradient there.",
        "papers": [
            [
                ESC,
                "§2.2",
                "∂ℓ/∂w^(l)_(c,c'')(x'',y'') = Σ_x Σ_y ∂ℓ/∂z^(l)_(c)(x,y) · "
                "a^(l−1)_(c'')(x+x'', y+y'')",
            ],
            [RAS, "eq. 55", "∂J/∂k_[p,q] = Σ_i Σ_j ∂J/∂z_1[i,j] · x_[i+p,j+q]"],
            [MUR, "eq. 3.69", "∂L/∂k^{p,q}_{u,v} = Σ_m Σ_n ∂L/∂C^{p,q}_{m,n} · I_{m−u,n−v}"],
        ],
    },
    "conv_bias": {
        "name": "a filter's bias: the sum of its output gradients",
        "words": "The bias is added at every position, so its gradient is the sum of the "
        "filter's output gradients.",
        "papers": [
            [ESC, "eq. 10", "∂ℓ/∂b^(l)_(c) = Σ ∂ℓ/∂z^(l)_(c)(x,y)"],
            [RAS, "eq. 52", "∂J/∂b₁ = Σ_i Σ_j ∂J/∂Z₁[i,j]"],
            [MUR, "eq. 3.74", "∂L/∂b^{p,q} = Σ_m Σ_n ∂L/∂C^{p,q}_{m,n}"],
        ],
    },
    "dense_weight": {
        "name": "a dense weight's gradient: input times output gradient",
        "words": "w_kn multiplies one input a_n into one unit z_k, so its gradient is a_n "
        "times z_k's gradient (one term for one image).",
        "papers": [
            [ESC, "§2.1", "∂ℓ/∂w^(l)_(c,c'') = a^(l−1)_(c'') · ∂ℓ/∂z^(l)_(c)"],
            [RAS, "eq. 46", "∂J/∂W = ∂J/∂Z₂ · Y_pool"],
            [MUR, "eq. 3.28-3.39", "∂L/∂w^L_{i,i−1} = (∂L/∂ŷ)(∂ŷ/∂w)"],
        ],
    },
    "dense_bias": {
        "name": "a dense bias: its unit's gradient",
        "words": "The bias is added once to z_k, so its gradient is z_k's gradient.",
        "papers": [
            [ESC, "§2.1", "∂ℓ/∂b^(l)_(c) = ∂ℓ/∂z^(l)_(c)"],
            [RAS, "eq. 47", "∂J/∂b₂ = ∂J/∂Z₂ · 1"],
            [MUR, "eq. 3.41-3.43", "∂L/∂b^L_i"],
        ],
    },
    "sgd": {
        "name": "gradient descent",
        "words": "Each parameter moves against its gradient, by the learning rate times it.",
        "papers": [
            [MUR, "eq. 3.77, 3.79", "W^l = W^l − α ∂L/∂W^l,  k^{p,q} = k^{p,q} − α ∂L/∂k^{p,q}"],
            [RAS, "eq. 33-34", "W = W − α ∂J/∂W,  b = b − α ∂J/∂b"],
        ],
    },
    "momentum": {
        "name": "gradient descent with momentum (PyTorch's form)",
        "words": "A velocity keeps a decaying sum of past gradients, v = μv + g, and the "
        "parameter moves by the rate times it (not in the three papers).",
        "papers": [],
    },
    "adam": {
        "name": "Adam (Kingma and Ba, 2015)",
        "words": "Running means of the gradient (m) and of its square (v), corrected for "
        "starting at zero, set a step of about the rate in the gradient's direction.",
        "papers": [[ESC, "§3", "trains with Adam (adamGD) but leaves its update unexplained"]],
    },
    "escontrela": {
        "name": "the 2018 reference's Adam",
        "words": "The reference's moments restart from zero at every batch and are not bias "
        "corrected, so a step is lr (1−β₁) g / sqrt((1−β₂) g² + ε).",
        "papers": [
            [
                ESC,
                "§3, adamGD (its update lines are in the repository, not printed)",
                "lr 0.01, β₁ 0.95, β₂ 0.99, ε 1e−7 inside the square root",
            ]
        ],
    },
}
