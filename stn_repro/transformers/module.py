"""The spatial transformer as plain ``torch.nn`` modules."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from stn_repro.transformers.families import TransformFamily, get_family
from stn_repro.transformers.sampling import check_sampling_options, warp


class SpatialTransformer(nn.Module):
    """Localisation net → θ → sampling grid → warped input (Jaderberg et al., 2015).

    Args:
        localisation: module mapping the input ``(B, C, *spatial)`` to parameters ``(B, P)`` of ``family``.
        family: a :class:`TransformFamily` or its name (``"affine"``, ``"attention"``, ``"projective"``,
            ``"tps"``, ``"affine3d"``).
        out_size: spatial size of the output, ``(H, W)`` or ``(D, H, W)`` (an int means a square/cube); ``None``
            keeps the input's size. A smaller size downsamples or crops (attention).
        mode: ``"bilinear"`` or ``"nearest"``.
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``; zeros assumes a zero background, so
            normalise data so that the background is 0 (or pad with ``"border"``).

    Shapes:
        input ``(B, C, H, W)`` (``(B, C, D, H, W)`` for 3D families) → output ``(B, C, *out_size)``.
        After each forward, :attr:`theta` holds the parameters ``(B, P)`` used (with their graph, for auxiliary
        losses and logging).
    """

    def __init__(
        self,
        localisation: nn.Module,
        family: str | TransformFamily,
        out_size: int | Sequence[int] | None = None,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        check_sampling_options(mode, padding_mode)
        self.localisation = localisation
        self.family = get_family(family)
        dims = self.family.spatial_dims
        if out_size is not None:
            out_size = (out_size,) * dims if isinstance(out_size, int) else tuple(out_size)
            out_size = self.family.check_out_size(out_size)
        self.out_size = out_size
        self.mode = mode
        self.padding_mode = padding_mode
        self.theta: Tensor | None = None

    def predict_theta(self, input: Tensor) -> Tensor:
        """Transform parameters ``(B, P)`` for ``input``."""
        self._check_input(input)
        theta = self.localisation(input).flatten(1)
        self.family.check_params(theta)
        return theta

    def warp(self, input: Tensor, theta: Tensor) -> Tensor:
        """Sample ``input`` ``(B, C, *spatial)`` through the transform ``theta`` ``(B, P)`` (in float32 or wider
        under mixed precision: see :func:`~stn_repro.transformers.sampling.warp`)."""
        self._check_input(input)
        out_size = self.out_size or tuple(input.shape[2:])
        return warp(input, theta, lambda params: self.family.grid(params, out_size), self.mode, self.padding_mode)

    def forward(self, input: Tensor) -> Tensor:
        self.theta = self.predict_theta(input)
        return self.warp(input, self.theta)

    def _check_input(self, input: Tensor) -> None:
        rank = self.family.spatial_dims + 2
        if input.dim() != rank:
            layout = "(B, C, H, W)" if rank == 4 else "(B, C, D, H, W)"
            raise ValueError(
                f"the {self.family.name} transformer expects input {layout}, got shape {tuple(input.shape)}"
            )

    def extra_repr(self) -> str:
        return f"family={self.family!r}, out_size={self.out_size}, mode={self.mode}, padding_mode={self.padding_mode}"


class ParallelTransformers(nn.Module):
    """Several spatial transformers applied to the same input (CUB parts, MNIST addition).

    Args:
        transformers: the transformers; each sees the whole input.
        concat: concatenate the outputs along channels (they must share an output size); otherwise return a list.

    Shapes:
        input ``(B, C, H, W)`` → ``(B, N·C, H', W')`` or a list of N ``(B, C, H', W')``.
    """

    def __init__(self, transformers: Sequence[SpatialTransformer], concat: bool = True) -> None:
        super().__init__()
        if not transformers:
            raise ValueError("ParallelTransformers needs at least one transformer")
        self.transformers = nn.ModuleList(transformers)
        self.concat = concat

    @property
    def thetas(self) -> list[Tensor | None]:
        """The parameters each transformer used in the last forward."""
        return [t.theta for t in self.transformers]

    def forward(self, input: Tensor) -> Tensor | list[Tensor]:
        outputs = [transformer(input) for transformer in self.transformers]
        return torch.cat(outputs, dim=1) if self.concat else outputs


class SharedLocalisationTransformers(nn.Module):
    """N transformers of one family driven by ONE localisation net that emits all their parameters (CUB parts).

    Args:
        localisation: module mapping the input ``(B, C, H, W)`` to ``(B, N·P)``; its head's bias decides where the
            N transformers start (e.g. tiling the image).
        family: the transform family of every transformer (a :class:`TransformFamily` or its name).
        count: N, the number of transformers.
        out_size: ``(H', W')`` of every output (an int means a square); ``None`` keeps the input size.
        mode, padding_mode: see :class:`SpatialTransformer`.

    Shapes:
        input ``(B, C, H, W)`` → list of N outputs ``(B, C, H', W')``; after each forward :attr:`theta` holds
        ``(B, N, P)``.
    """

    def __init__(
        self,
        localisation: nn.Module,
        family: str | TransformFamily,
        count: int,
        out_size: int | Sequence[int] | None = None,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        self.count = count
        self.localisation = localisation
        self.sampler = SpatialTransformer(nn.Identity(), family, out_size, mode, padding_mode)
        self.family = self.sampler.family
        self.theta: Tensor | None = None

    def predict_theta(self, input: Tensor) -> Tensor:
        """Parameters ``(B, N, P)`` for ``input``."""
        theta = self.localisation(input).flatten(1)
        expected = self.count * self.family.num_params
        if theta.shape[1] != expected:
            raise ValueError(
                f"the localisation net emits {theta.shape[1]} values; {self.count} x {self.family.name} "
                f"transformers need {expected}"
            )
        return theta.view(len(theta), self.count, self.family.num_params)

    def forward(self, input: Tensor) -> list[Tensor]:
        self.theta = self.predict_theta(input)
        return [self.sampler.warp(input, self.theta[:, i]) for i in range(self.count)]


def localisation_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """Parameters of every localisation net inside ``model`` (for their own learning rate)."""
    for module in model.modules():
        if isinstance(module, SpatialTransformer | SharedLocalisationTransformers):
            yield from module.localisation.parameters()


def split_localisation_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(localisation, other)`` parameters of ``model``, each listed once, for optimiser parameter groups."""
    localisation = {id(p): p for p in localisation_parameters(model)}
    other = [p for p in model.parameters() if id(p) not in localisation]
    return list(localisation.values()), other
