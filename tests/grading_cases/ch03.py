"""Grader cases for chapter 3: correct versions written several ways, and the mistakes learners make.

``diagnoses``: ``{label: (answer, words)}``, a wrong answer whose ``fail`` message must contain ``words``.
"""

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmllm_course.bridges import LinearBridge, LinearBridgeConfig, MLPBridge, MLPBridgeConfig
from mmllm_course.grading.checks.ch03 import mlp_forward_reference

# ------------------------------------------------------------------------------------------- mlp_forward


def forward_reference(x, w1, b1, w2, b2):
    return mlp_forward_reference(x, w1, b1, w2, b2)


def forward_einsum(x, w1, b1, w2, b2):
    """Correct, with einsum and the GELU written from the normal CDF."""
    h = torch.einsum("bnd,fd->bnf", x, w1) + b1
    h = h * 0.5 * (1 + torch.erf(h / 2**0.5))  # x * Phi(x)
    return torch.einsum("bnf,of->bno", h, w2) + b2


def forward_modules(x, w1, b1, w2, b2):
    """Correct, through nn.Linear modules holding the weights (in the input's dtype)."""
    first, second = nn.Linear(w1.shape[1], w1.shape[0]).to(x.dtype), nn.Linear(w2.shape[1], w2.shape[0]).to(x.dtype)
    with torch.no_grad():
        first.weight.copy_(w1), first.bias.copy_(b1), second.weight.copy_(w2), second.bias.copy_(b2)
    return second(nn.GELU()(first(x)))


def forward_no_gelu(x, w1, b1, w2, b2):
    """Wrong: no activation between the layers."""
    return F.linear(F.linear(x, w1, b1), w2, b2)


def forward_relu(x, w1, b1, w2, b2):
    """Wrong: ReLU."""
    return F.linear(F.relu(F.linear(x, w1, b1)), w2, b2)


def forward_gelu_tanh(x, w1, b1, w2, b2):
    """Wrong: the tanh approximation."""
    return F.linear(F.gelu(F.linear(x, w1, b1), approximate="tanh"), w2, b2)


def forward_gelu_at_end(x, w1, b1, w2, b2):
    """Wrong: a GELU after the second layer too."""
    return F.gelu(F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2))


def forward_gelu_only_at_end(x, w1, b1, w2, b2):
    """Wrong: linear, linear, GELU."""
    return F.gelu(F.linear(F.linear(x, w1, b1), w2, b2))


def forward_layers_swapped(x, w1, b1, w2, b2):
    """Wrong: the second layer first (runs when the layers are square)."""
    return F.linear(F.gelu(F.linear(x, w2, b2)), w1, b1)


def forward_no_transpose(x, w1, b1, w2, b2):
    """Wrong: x @ W instead of x @ W.T (runs when square; raises otherwise)."""
    return F.gelu(x @ w1 + b1) @ w2 + b2


def forward_no_b1(x, w1, b1, w2, b2):
    """Wrong: b1 forgotten."""
    return F.gelu(x @ w1.T) @ w2.T + b2


def forward_no_b2(x, w1, b1, w2, b2):
    """Wrong: b2 forgotten."""
    return F.gelu(x @ w1.T + b1) @ w2.T


def forward_float32(x, w1, b1, w2, b2):
    """Wrong: always float32."""
    return mlp_forward_reference(x.float(), w1.float(), b1.float(), w2.float(), b2.float())


def forward_pooled(x, w1, b1, w2, b2):
    """Wrong: averages the tokens first (K = 1)."""
    return mlp_forward_reference(x.mean(dim=1, keepdim=True), w1, b1, w2, b2)


# ------------------------------------------------------------------------------------------- bridge_budget


def budget_reference(kind, image_size, patch_size, in_dim, llm_dim, hidden_dim=None):
    k = (image_size // patch_size) ** 2
    if kind == "linear":
        return in_dim * llm_dim + llm_dim, k
    f = llm_dim if hidden_dim is None else hidden_dim
    return in_dim * f + f + f * llm_dim + llm_dim, k


def budget_by_modules(kind, image_size, patch_size, in_dim, llm_dim, hidden_dim=None):
    """Correct: counts the parameters of real modules on the meta device, numpy ints for K."""
    with torch.device("meta"):
        if kind == "linear":
            module = nn.Linear(in_dim, llm_dim)
        else:
            f = hidden_dim or llm_dim
            module = nn.Sequential(nn.Linear(in_dim, f), nn.GELU(), nn.Linear(f, llm_dim))
    return sum(p.numel() for p in module.parameters()), np.int64(image_size // patch_size) ** 2


def budget_no_bias(kind, image_size, patch_size, in_dim, llm_dim, hidden_dim=None):
    """Wrong: weights only."""
    k = (image_size // patch_size) ** 2
    if kind == "linear":
        return in_dim * llm_dim, k
    f = llm_dim if hidden_dim is None else hidden_dim
    return in_dim * f + f * llm_dim, k


def budget_hidden_in_dim(kind, image_size, patch_size, in_dim, llm_dim, hidden_dim=None):
    """Wrong: F defaults to in_dim."""
    return budget_reference(kind, image_size, patch_size, in_dim, llm_dim, hidden_dim or in_dim)


def budget_k_side(kind, image_size, patch_size, in_dim, llm_dim, hidden_dim=None):
    """Wrong: K = patches along one side."""
    return budget_reference(kind, image_size, patch_size, in_dim, llm_dim, hidden_dim)[0], image_size // patch_size


def budget_k_cls(kind, image_size, patch_size, in_dim, llm_dim, hidden_dim=None):
    """Wrong: the [CLS] token counted."""
    p, k = budget_reference(kind, image_size, patch_size, in_dim, llm_dim, hidden_dim)
    return p, k + 1


def budget_k_one(kind, image_size, patch_size, in_dim, llm_dim, hidden_dim=None):
    """Wrong: K = 1 (a pooled vector)."""
    return budget_reference(kind, image_size, patch_size, in_dim, llm_dim, hidden_dim)[0], 1


def budget_swapped(kind, image_size, patch_size, in_dim, llm_dim, hidden_dim=None):
    """Wrong: (K, parameters)."""
    p, k = budget_reference(kind, image_size, patch_size, in_dim, llm_dim, hidden_dim)
    return k, p


def budget_mlp_as_linear(kind, image_size, patch_size, in_dim, llm_dim, hidden_dim=None):
    """Wrong: counts the MLP as one layer."""
    return budget_reference("linear", image_size, patch_size, in_dim, llm_dim)


def budget_float_k(kind, image_size, patch_size, in_dim, llm_dim, hidden_dim=None):
    """Wrong: K from a float division (e.g. 10.666... for 32 px in patches of 3): here a float that is not whole."""
    p, _ = budget_reference(kind, image_size, patch_size, in_dim, llm_dim, hidden_dim)
    return p, (image_size / patch_size) ** 2 + 0.5


# ------------------------------------------------------------------------------------------- build: MyMLPBridge


class BridgeReference(nn.Module):
    """Correct: the solution's module."""

    def __init__(self, in_dim, out_dim, hidden_dim=None):
        super().__init__()
        self.in_dim = in_dim
        hidden = out_dim if hidden_dim is None else hidden_dim
        self.layers = nn.ModuleList([nn.Linear(in_dim, hidden), nn.Linear(hidden, out_dim)])

    def num_output_tokens(self, n):
        return n

    def forward(self, features, mask=None):
        if features.shape[-1] != self.in_dim:
            raise ValueError(f"expected width {self.in_dim}, got {features.shape[-1]}")
        return self.layers[1](F.gelu(self.layers[0](features)))


class BridgeFunctional(nn.Module):
    """Correct, written differently: a list built in a loop, the GELU as a module, the check with the shape tuple."""

    def __init__(self, in_dim, out_dim, hidden_dim=None):
        super().__init__()
        widths = [in_dim, hidden_dim or out_dim, out_dim]
        self.layers = nn.ModuleList()
        for a, b in zip(widths, widths[1:]):
            self.layers.append(nn.Linear(a, b))
        self.act = nn.GELU()

    def num_output_tokens(self, n: int) -> int:
        return int(n)

    def forward(self, features, mask=None):
        d_in = self.layers[0].in_features
        if features.shape[-1] != d_in:
            raise ValueError(f"features (B, N, D_in): D_in must be {d_in}; got shape {tuple(features.shape)}")
        return self.layers[1](self.act(self.layers[0](features)))


class BridgeVariant(BridgeReference):
    act, act_at_end, check_width, k_plus = staticmethod(F.gelu), False, True, 0

    def num_output_tokens(self, n):
        return n + self.k_plus

    def forward(self, features, mask=None):
        if self.check_width and features.shape[-1] != self.in_dim:
            raise ValueError(f"expected width {self.in_dim}, got {features.shape[-1]}")
        x = self.layers[1](self.act(self.layers[0](features)))
        return self.act(x) if self.act_at_end else x


def _bridge_wrong(name, **switches):
    return type(name, (BridgeVariant,), dict(switches, __doc__=f"Wrong: {name}."))


BridgeNoGelu = _bridge_wrong("BridgeNoGelu", act=staticmethod(lambda t: t))
BridgeReLU = _bridge_wrong("BridgeReLU", act=staticmethod(F.relu))
BridgeGeluTanh = _bridge_wrong("BridgeGeluTanh", act=staticmethod(lambda t: F.gelu(t, approximate="tanh")))
BridgeGeluAtEnd = _bridge_wrong("BridgeGeluAtEnd", act_at_end=True)
BridgeNoWidthCheck = _bridge_wrong("BridgeNoWidthCheck", check_width=False)
BridgeKPlusOne = _bridge_wrong("BridgeKPlusOne", k_plus=1)


class BridgeOtherNames(nn.Module):
    """Wrong: fc1 / fc2 instead of layers.0 / layers.1."""

    def __init__(self, in_dim, out_dim, hidden_dim=None):
        super().__init__()
        hidden = hidden_dim or out_dim
        self.fc1, self.fc2 = nn.Linear(in_dim, hidden), nn.Linear(hidden, out_dim)

    def num_output_tokens(self, n):
        return n

    def forward(self, features, mask=None):
        return self.fc2(F.gelu(self.fc1(features)))


class BridgeHiddenInDim(BridgeReference):
    """Wrong: F defaults to in_dim (the library's weights do not fit MyMLPBridge(32, 48, None))."""

    def __init__(self, in_dim, out_dim, hidden_dim=None):
        nn.Module.__init__(self)
        self.in_dim = in_dim
        hidden = in_dim if hidden_dim is None else hidden_dim
        self.layers = nn.ModuleList([nn.Linear(in_dim, hidden), nn.Linear(hidden, out_dim)])


class BridgeIgnoresHidden(BridgeReference):
    """Wrong: always F = out_dim, ignoring hidden_dim."""

    def __init__(self, in_dim, out_dim, hidden_dim=None):
        super().__init__(in_dim, out_dim, None)


class BridgeSequential(BridgeReference):
    """Wrong: an nn.Sequential with the GELU inside (names layers.0, layers.2)."""

    def __init__(self, in_dim, out_dim, hidden_dim=None):
        nn.Module.__init__(self)
        self.in_dim = in_dim
        hidden = hidden_dim or out_dim
        self.layers = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, features, mask=None):
        if features.shape[-1] != self.in_dim:
            raise ValueError(f"expected width {self.in_dim}, got {features.shape[-1]}")
        return self.layers(features)


class BridgeDetachedHidden(BridgeReference):
    """Wrong: the hidden activations detached (no gradient reaches the first layer)."""

    def forward(self, features, mask=None):
        if features.shape[-1] != self.in_dim:
            raise ValueError(f"expected width {self.in_dim}, got {features.shape[-1]}")
        return self.layers[1](F.gelu(self.layers[0](features)).detach())


class BridgeAssertWidth(BridgeReference):
    """Wrong: a bare assert instead of a ValueError."""

    def forward(self, features, mask=None):
        assert features.shape[-1] == self.in_dim, "bad width"
        return self.layers[1](F.gelu(self.layers[0](features)))


class BridgeVagueError(BridgeReference):
    """Wrong: a ValueError that names neither width."""

    def forward(self, features, mask=None):
        if features.shape[-1] != self.in_dim:
            raise ValueError("wrong input size")
        return self.layers[1](F.gelu(self.layers[0](features)))


# ------------------------------------------------------------------------------------------- stretch: DeepMLPBridge


class DeepReference(nn.Module):
    """Correct: widths list, GELU between layers."""

    def __init__(self, in_dim, out_dim, hidden_dim, depth):
        super().__init__()
        self.in_dim = in_dim
        w = [in_dim] + [hidden_dim] * (depth - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(w[:-1], w[1:]))

    def num_output_tokens(self, n):
        return n

    def forward(self, features, mask=None):
        if features.shape[-1] != self.in_dim:
            raise ValueError(f"expected width {self.in_dim}, got {features.shape[-1]}")
        x = self.layers[0](features)
        for layer in self.layers[1:]:
            x = layer(F.gelu(x))
        return x


class DeepEnumerate(DeepReference):
    """Correct, written differently: an activation after every layer but the last, by index."""

    def forward(self, features, mask=None):
        if features.shape[-1] != self.in_dim:
            raise ValueError(f"features must be (B, N, {self.in_dim}), got {tuple(features.shape)}")
        x = features
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.gelu(x)
        return x


class DeepGeluEverywhere(DeepReference):
    """Wrong: a GELU after the last layer too."""

    def forward(self, features, mask=None):
        x = features
        for layer in self.layers:
            x = F.gelu(layer(x))
        return x


class DeepGeluFirstOnly(DeepReference):
    """Wrong: a GELU after the first layer only."""

    def forward(self, features, mask=None):
        if features.shape[-1] != self.in_dim:
            raise ValueError(f"expected width {self.in_dim}, got {features.shape[-1]}")
        x = self.layers[0](features)
        if len(self.layers) > 1:
            x = F.gelu(x)
        for layer in self.layers[1:]:
            x = layer(x)
        return x


class DeepAlwaysTwo(BridgeReference):
    """Wrong: ignores depth (always two layers)."""

    def __init__(self, in_dim, out_dim, hidden_dim, depth):
        super().__init__(in_dim, out_dim, hidden_dim)


class DeepOffByOne(DeepReference):
    """Wrong: depth hidden layers, i.e. depth + 1 linear layers."""

    def __init__(self, in_dim, out_dim, hidden_dim, depth):
        super().__init__(in_dim, out_dim, hidden_dim, depth + 1)


# ------------------------------------------------------------------------------------------- train: the bridge


@lru_cache(maxsize=1)
def _small_task():
    from mmllm_course.bridges.alignment import make_alignment_task

    return make_alignment_task(train_size=3000, held_out_size=100, out_dim=64, seed=0)


def _train(bridge: nn.Module, steps: int, task=None, lr: float = 3e-3) -> nn.Module:
    """A learner-style loop: random batches, the chapter's loss."""
    from mmllm_course.bridges.alignment import alignment_loss

    task = task or _small_task()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(0)
        opt = torch.optim.AdamW(bridge.parameters(), lr=lr)
        for _ in range(steps):
            idx = torch.randint(0, len(task.train_features), (256,), generator=g)
            loss = alignment_loss(bridge(task.train_features[idx]), task.train_labels[idx], task.targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return bridge.eval()


class NearestMeanBridge(nn.Module):
    """Correct (an oracle, not trained by gradient): output the target of the nearest class mean feature."""

    def __init__(self, target_seed: int = 0, keep_token_axis: bool = True, out_dim: int = 64):
        super().__init__()
        self.target_seed, self.keep, self.out_dim = target_seed, keep_token_axis, out_dim
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, features):
        from mmllm_course.bridges.alignment import random_targets

        task = _small_task()
        x = task.train_features[:, 0]
        means = torch.stack([x[task.train_labels == c].mean(0) for c in range(160)])  # (160, 64)
        targets = random_targets(160, self.out_dim, self.target_seed)
        out = targets[torch.cdist(features[:, 0], means).argmin(-1)] + 0 * self.dummy  # (B, D)
        return out[:, None] if self.keep else out


def trained_mlp():
    """Correct: a zero-argument function returning a library MLP trained 400 steps."""
    torch.manual_seed(0)
    return _train(MLPBridge(MLPBridgeConfig(in_dim=64, out_dim=64, hidden_dim=128)), 400)


class TwoTokenMLP(nn.Module):
    """An MLP bridge giving K = 2 tokens per feature (scored by their mean)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 128))

    def forward(self, features):
        b, n, _ = features.shape
        return self.net(features).view(b, n * 2, 64)


def trained_two_token_mlp():
    """Correct: K = 2 output tokens, trained with the mean-over-K score."""
    torch.manual_seed(1)
    return _train(TwoTokenMLP(), 400)


def trained_linear():
    """Wrong: a linear bridge, trained as long as the MLP."""
    torch.manual_seed(0)
    return _train(LinearBridge(LinearBridgeConfig(in_dim=64, out_dim=64)), 400, lr=1e-2)


def trained_few_steps():
    """Wrong: an MLP trained 10 steps only."""
    torch.manual_seed(0)
    return _train(MLPBridge(MLPBridgeConfig(in_dim=64, out_dim=64)), 10)


def _untrained_mlp():
    torch.manual_seed(0)
    return MLPBridge(MLPBridgeConfig(in_dim=64, out_dim=64))


def train_with_arguments(steps):
    """Wrong: the training function itself (needs arguments)."""
    return _train(MLPBridge(MLPBridgeConfig(in_dim=64, out_dim=64)), steps)


CASES = {
    "ch03.mlp_forward": {
        "correct": [forward_reference, forward_einsum, forward_modules],
        "wrong": {
            "no GELU": forward_no_gelu,
            "ReLU": forward_relu,
            "tanh GELU": forward_gelu_tanh,
            "GELU at the end too": forward_gelu_at_end,
            "GELU only at the end": forward_gelu_only_at_end,
            "layers swapped": forward_layers_swapped,
            "no transpose": forward_no_transpose,
            "b1 forgotten": forward_no_b1,
            "b2 forgotten": forward_no_b2,
            "always float32": forward_float32,
            "tokens pooled": forward_pooled,
        },
        "diagnoses": {
            "no GELU": (forward_no_gelu, "NO GELU between them"),
            "ReLU": (forward_relu, "ReLU instead of the GELU"),
            "tanh GELU": (forward_gelu_tanh, "tanh approximation"),
            "GELU at the end too": (forward_gelu_at_end, "after the second layer as well"),
            "GELU only at the end": (forward_gelu_only_at_end, "only after the second layer"),
            "b1 forgotten": (forward_no_b1, "first layer's bias b1 forgotten"),
            "b2 forgotten": (forward_no_b2, "second layer's bias b2 forgotten"),
            "layers swapped": (forward_layers_swapped, "wrong order"),
            "no transpose": (forward_no_transpose, "x @ W instead of x @ W.T"),
        },
    },
    "ch03.bridge_budget": {
        "correct": [budget_reference, budget_by_modules],
        "wrong": {
            "no biases": budget_no_bias,
            "hidden defaults to in_dim": budget_hidden_in_dim,
            "K along one side": budget_k_side,
            "[CLS] counted": budget_k_cls,
            "K = 1": budget_k_one,
            "swapped": budget_swapped,
            "MLP counted as one layer": budget_mlp_as_linear,
            "K not an int": budget_float_k,
        },
        "diagnoses": {
            "no biases": (budget_no_bias, "bias forgotten"),
            "hidden defaults to in_dim": (budget_hidden_in_dim, "F = D_llm"),
            "K along one side": (budget_k_side, "along one side"),
            "[CLS] counted": (budget_k_cls, "[CLS] token counted"),
            "K = 1": (budget_k_one, "pooled image vector"),
            "swapped": (budget_swapped, "swapped"),
            "MLP counted as one layer": (budget_mlp_as_linear, "one layer only"),
            "K not an int": (budget_float_k, "must be an int"),
        },
    },
    "ch03.mlp_bridge": {
        "correct": [BridgeReference, BridgeFunctional],
        "wrong": {
            "no GELU": BridgeNoGelu,
            "ReLU": BridgeReLU,
            "tanh GELU": BridgeGeluTanh,
            "GELU at the end too": BridgeGeluAtEnd,
            "no width check": BridgeNoWidthCheck,
            "assert instead of ValueError": BridgeAssertWidth,
            "ValueError naming nothing": BridgeVagueError,
            "K = N + 1": BridgeKPlusOne,
            "other parameter names": BridgeOtherNames,
            "hidden width defaults to in_dim": BridgeHiddenInDim,
            "hidden_dim ignored": BridgeIgnoresHidden,
            "nn.Sequential with the GELU inside": BridgeSequential,
            "hidden activations detached": BridgeDetachedHidden,
            "an instance, not the class": BridgeReference(64, 96, 48),
        },
        "diagnoses": {
            "no GELU": (BridgeNoGelu, "no GELU at all"),
            "ReLU": (BridgeReLU, "ReLU instead"),
            "tanh GELU": (BridgeGeluTanh, "tanh approximation"),
            "GELU at the end too": (BridgeGeluAtEnd, "after the last layer too"),
            "no width check": (BridgeNoWidthCheck, "raised RuntimeError"),
            "assert instead of ValueError": (BridgeAssertWidth, "raised AssertionError"),
            "ValueError naming nothing": (BridgeVagueError, "must name the expected width"),
            "K = N + 1": (BridgeKPlusOne, "one LLM token per feature token"),
            "other parameter names": (BridgeOtherNames, "layers.0.weight (48, 64)"),
            "nn.Sequential with the GELU inside": (BridgeSequential, "unexpected: layers.2.weight"),
            "hidden width defaults to in_dim": (BridgeHiddenInDim, "layers.0.weight is (32, 32), expected (48, 32)"),
            "hidden activations detached": (BridgeDetachedHidden, "no gradient reaches the input"),
            "an instance, not the class": (BridgeReference(64, 96, 48), "pass the class itself"),
        },
    },
    "ch03.deep_mlp_bridge": {
        "correct": [DeepReference, DeepEnumerate],
        "wrong": {
            "GELU after every layer": DeepGeluEverywhere,
            "GELU after the first layer only": DeepGeluFirstOnly,
            "depth ignored": DeepAlwaysTwo,
            "depth + 1 layers": DeepOffByOne,
        },
        "diagnoses": {
            "GELU after every layer": (DeepGeluEverywhere, "after the last layer too"),
            "GELU after the first layer only": (DeepGeluFirstOnly, "after the first layer only"),
            "depth ignored": (DeepAlwaysTwo, "unexpected: layers.1.weight"),
        },
    },
    "ch03.train_bridge": {
        "correct": [NearestMeanBridge(), trained_mlp, trained_two_token_mlp],
        "wrong": {
            "a trained linear bridge": trained_linear,
            "10 steps only": trained_few_steps,
            "untrained": _untrained_mlp(),
            "another seed's targets": NearestMeanBridge(target_seed=1),
            "(B, D) output": NearestMeanBridge(keep_token_axis=False),
            "out_dim 32": NearestMeanBridge(out_dim=32),
            "the class": MLPBridge,
            "the training function": train_with_arguments,
        },
        "diagnoses": {
            "a trained linear bridge": (trained_linear, "Your bridge is linear"),
            "another seed's targets": (NearestMeanBridge(target_seed=1), "about chance"),
            "(B, D) output": (NearestMeanBridge(keep_token_axis=False), "keep the token axis"),
            "out_dim 32": (NearestMeanBridge(out_dim=32), "out_dim=64"),
            "the class": (MLPBridge, "not its class"),
            "the training function": (train_with_arguments, "needs arguments"),
        },
    },
    "ch03.q1": {"answer": "b", "wrong": ["a", "c", "d"]},
    "ch03.q2": {"answer": "a", "wrong": ["b", "c", "d"]},
    "ch03.q3": {"answer": "c", "wrong": ["a", "b", "d"]},
    "ch03.q4": {"answer": "c", "wrong": ["a", "b", "d"]},
}
