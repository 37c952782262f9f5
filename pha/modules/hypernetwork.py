"""A generic hypernetwork: conditioning embeddings -> any set of tensors (adapter weights,
LayerNorm gains, prefixes, ...) for every "site" (a layer, or a (layer, position) pair).

Shared form (the default, one generator for all sites; PHA, HyperFormer++, HyperDecoders):
    u = LayerNorm(Linear(hidden, out)(ReLU(Linear(c + E, hidden)([cond ; site_embedding]))))
    tensor_name = head_name(u).view(shape)
With out_dim=None the trunk stops after the ReLU (u = ReLU(Linear(c + E, hidden)(...)),
the HyperDecoders release's generator).
where site_embedding concatenates one learned embedding per site axis (e.g. the layer,
or the layer and the position). Per-site form (per_site=True): one generator per site on
the conditioning alone (no site embeddings).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

INITS = ("hyperfanin", "normal")


class _Generator(nn.Module):
    def __init__(self, in_dim, shapes, hidden_dim, out_dim, eps):
        super().__init__()
        layers = [nn.Linear(in_dim, hidden_dim), nn.ReLU()]
        if out_dim is not None:
            layers += [nn.Linear(hidden_dim, out_dim), nn.LayerNorm(out_dim, eps=eps)]
        self.trunk = nn.Sequential(*layers)
        head_in = hidden_dim if out_dim is None else out_dim
        self.heads = nn.ModuleDict(
            {name: nn.Linear(head_in, math.prod(shape)) for name, shape in shapes.items()}
        )

    def forward(self, inputs: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
        u = self.trunk(inputs)
        return {name: self.heads[name](u) for name in names}


class HyperNetwork(nn.Module):
    """Generates `shapes` (name -> per-instance shape) for every site from `cond` [N, cond_dim].

    Args:
        cond_dim: width of the conditioning input (a prototype, a task embedding, ...).
        shapes: e.g. {"w_down": (d, r), "b_down": (r,), "w_up": (r, d), "b_up": (d,)}.
            A 2-D shape (fan_in, fan_out) is a weight matrix applied as x @ W.
        site_sizes: size of each site axis, e.g. (L,) for layers or (L, 2) for
            (layer, position); sites are the row-major product (layer-major).
        site_embed_dim: width of each site axis's embedding.
        hidden_dim, out_dim: the trunk widths (128 and 64 in the PHA release); out_dim None:
            no second layer and no LayerNorm, the heads read the ReLU output.
        per_site: one generator per site instead of one shared generator.
        init: "hyperfanin" (PHA: weight heads U(+-1e-3 sqrt(3 / (out_dim * fan_in))),
            1-D heads U(+-1e-3 sqrt(3 / out_dim)), head biases 0, trunk PyTorch default)
            or "normal" (HyperFormer: every Linear N(0, 1e-2), biases 0).
        layer_norm_eps: epsilon of the trunk's LayerNorm.
    forward(cond, names=None, sites=None) -> {name: Tensor [len(sites), N, *shape]} (all
        names and all sites by default).
    """

    def __init__(
        self,
        cond_dim: int,
        shapes: dict[str, tuple[int, ...]],
        site_sizes: tuple[int, ...] = (1,),
        site_embed_dim: int = 64,
        hidden_dim: int = 128,
        out_dim: int | None = 64,
        per_site: bool = False,
        init: str = "hyperfanin",
        layer_norm_eps: float = 1e-6,
    ):
        super().__init__()
        if not shapes:
            raise ValueError("shapes must name at least one tensor to generate")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if not site_sizes or any(s <= 0 for s in site_sizes):
            raise ValueError(f"site_sizes must be positive sizes, got {site_sizes}")
        self.shapes = {name: tuple(shape) for name, shape in shapes.items()}
        self.site_sizes = tuple(site_sizes)
        self.num_sites = math.prod(site_sizes)
        self.per_site = per_site
        if per_site:
            self.site_embeddings = nn.ModuleList()
            self.generators = nn.ModuleList(
                _Generator(cond_dim, self.shapes, hidden_dim, out_dim, layer_norm_eps)
                for _ in range(self.num_sites)
            )
        else:
            self.site_embeddings = nn.ModuleList(
                nn.Embedding(size, site_embed_dim) for size in site_sizes
            )
            in_dim = cond_dim + site_embed_dim * len(site_sizes)
            self.generator = _Generator(in_dim, self.shapes, hidden_dim, out_dim, layer_norm_eps)
        self._init(init, hidden_dim if out_dim is None else out_dim)

    def _generators(self) -> list[_Generator]:
        return list(self.generators) if self.per_site else [self.generator]

    @torch.no_grad()
    def _init(self, init: str, head_in: int) -> None:
        for gen in self._generators():
            if init == "normal":
                for m in gen.modules():
                    if isinstance(m, nn.Linear):
                        nn.init.normal_(m.weight, std=1e-2)
                        nn.init.zeros_(m.bias)
                continue
            for name, head in gen.heads.items():
                shape = self.shapes[name]
                fan = shape[0] if len(shape) == 2 else 1
                bound = 1e-3 * math.sqrt(3.0 / (head_in * fan))
                nn.init.uniform_(head.weight, -bound, bound)
                nn.init.zeros_(head.bias)

    @torch.no_grad()
    def zero_heads(self, *names: str) -> None:
        """Zero the named heads (weights and biases): those tensors start generated as 0."""
        unknown = sorted(set(names) - set(self.shapes))
        if unknown:
            raise ValueError(f"names: {unknown} are not generated; known: {sorted(self.shapes)}")
        for gen in self._generators():
            for name in names:
                nn.init.zeros_(gen.heads[name].weight)
                nn.init.zeros_(gen.heads[name].bias)

    def site_inputs(self) -> torch.Tensor:
        """[num_sites, site_embed_dim * axes]: the concatenated embeddings of every site."""
        grids = torch.meshgrid(
            *(
                torch.arange(s, device=self.site_embeddings[0].weight.device)
                for s in self.site_sizes
            ),
            indexing="ij",
        )
        return torch.cat(
            [emb(g.reshape(-1)) for emb, g in zip(self.site_embeddings, grids)], dim=-1
        )

    def forward(
        self,
        cond: torch.Tensor,
        names: Sequence[str] | None = None,
        sites: Sequence[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """names: the tensors to generate (default all); sites: the flat site ids to
        generate them for (default all), e.g. when different sites need different tensors."""
        if cond.dim() != 2:
            raise ValueError(f"cond must have shape [N, cond_dim], got {list(cond.shape)}")
        names = tuple(self.shapes) if names is None else tuple(names)
        if unknown := set(names) - set(self.shapes):
            raise ValueError(f"names must be among {sorted(self.shapes)}, got {sorted(unknown)}")
        sites = list(range(self.num_sites)) if sites is None else list(sites)
        if any(not 0 <= i < self.num_sites for i in sites):
            raise ValueError(f"sites must lie in [0, {self.num_sites}), got {sites}")
        n, s = cond.shape[0], len(sites)
        if self.per_site:
            outs = [self.generators[i](cond, names) for i in sites]
            flat = {name: torch.stack([o[name] for o in outs]) for name in names}
        else:
            site_in = self.site_inputs()[sites].to(cond.dtype)
            inputs = torch.cat(
                [cond.unsqueeze(0).expand(s, -1, -1), site_in.unsqueeze(1).expand(-1, n, -1)], -1
            )
            flat = self.generator(inputs.reshape(s * n, -1), names)
        return {name: flat[name].reshape(s, n, *self.shapes[name]) for name in names}
