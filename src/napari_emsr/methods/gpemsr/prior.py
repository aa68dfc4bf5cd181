"""Large factors with a generative texture prior (GPEMSR, Shou et al., CVPR 2024): method ``gpemsr``, three stages.

Stage ``vqgan`` (I): a VQGAN learns the stack's own lateral planes: encoder, vector quantiser (codebook of ``v``
vectors of ``d`` numbers, compression patch ``p``), decoder; loss ``L1 + lambda_c (codebook + beta commitment)
+ lambda_adv adversarial`` (paper eqs. 5, 6; lambda_adv = 0.05), with a PatchGAN discriminator trained by the
logistic loss and the R1 penalty on real planes.

Stage ``indexer`` (II): the latent indexer learns, from the isotropic method's degraded pairs (a lateral patch
degraded along its rows the way z was cut, interpolated back), to predict the code indices that stage I's
encoder gives the original patch: cross-entropy (paper eq. 7). The codebook and decoder stay fixed.

Restorer (III): the network ``gpemsr`` (:class:`~napari_emsr.nets.vqgan_arch.GPRestorer`) is trained on the same
pairs with the isotropic method's loss; it carries frozen copies of the indexer, the codebook, the decoder and the
encoder's embedding (copied in by the pair-maker's ``attach``), predicts a reference plane and multi-scale
reference features from each interpolated plane, and fuses them through a mask learned from their patch-wise
cosine similarity. The model file holds the restorer with its frozen prior (what applying it needs) and every
stage's weights (what a resumed run needs).

Not built from the paper: the multi-reference contextual loss of stage III, and its flow/deformable alignment of
neighbouring images (the issue's multi-slice context).

Prior sizes (``--prior``): ``tiny`` and ``small`` fit a CPU; ``large`` is the paper's v = 1024, d = 512, p = 16.
Importing this module does not import torch.
"""

from __future__ import annotations

import logging

import numpy as np

from ...errors import InputError
from .. import Method, Option, Stage
from ..isotropic import ISOTROPIC, isotropic_pairs
from ..isotropic.apply import AXIAL
from ..isotropic.degradation import DEFAULT_STEPS as DEGRADATION_STEPS
from ..isotropic.degradation import DegradationLearner, learned_active

log = logging.getLogger(__name__)

#: Default steps of stages I and II (``--vqgan-steps``, ``--indexer-steps``).
VQGAN_STEPS, INDEXER_STEPS = 600, 400
#: Stage I loss weights: codebook lambda_c, commitment beta (of VQ-VAE), adversarial lambda_adv (paper: 0.05),
#: and the R1 penalty gamma on real planes.
LAMBDA_C, BETA, LAMBDA_ADV, R1_GAMMA = 1.0, 0.25, 0.05, 1.0
#: The discriminator joins after this share of stage I (the reconstruction first finds the planes' content).
ADV_START = 0.25
#: Adam as in the paper (lr 4e-4, betas 0.9, 0.99).
LR, BETAS = 4e-4, (0.9, 0.99)
#: Batch of stages I and II.
STAGE_BATCH = 8


def _prior_name(ctx) -> str:
    return str(ctx.options.get("prior") or "small")


def _stage_patch(ctx, p: int) -> int:
    side = (int(ctx.patch) // p) * p
    if side < p:
        raise InputError(
            f"the prior's compression patch p = {p} is larger than the training patch {ctx.patch}: use a larger "
            "--patch or a smaller --prior"
        )
    return side


class VQGANStage:
    """Stage I's runner: the VQGAN and its discriminator on the context's lateral patches."""

    def __init__(self, ctx) -> None:
        import torch

        from ...nets.vqgan_arch import VQGAN, PatchDiscriminator

        self._torch, self.ctx = torch, ctx
        self.prior = _prior_name(ctx)
        self.model = VQGAN(self.prior).to(ctx.device)
        self.side = _stage_patch(ctx, self.model.spec["patch"])
        self.disc = PatchDiscriminator(max(8, self.model.spec["width"])).to(ctx.device)
        self.opt_g = torch.optim.Adam(self.model.parameters(), lr=LR, betas=BETAS)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=LR, betas=BETAS)
        self.steps = 0
        self.total = int(ctx.options.get("vqgan_steps", VQGAN_STEPS))

    def _batch(self, n: int):
        return self._torch.from_numpy(self.ctx.lateral_patches(n, size=self.side))[:, None].to(self.ctx.device)

    def _init_codebook(self, hr) -> None:
        """Codes start at encoder outputs of the first batch (plus a little noise): every code is used from the
        start instead of a few taking every position."""
        torch = self._torch
        with torch.no_grad():
            z = self.model.encoder(hr).permute(0, 2, 3, 1).reshape(-1, self.model.spec["dim"])
            w = self.model.quantizer.codebook.weight
            pick = torch.randint(0, len(z), (len(w),), generator=torch.Generator().manual_seed(0))
            w.copy_(z[pick.to(z.device)] + 0.01 * z.std() * torch.randn_like(w))

    def step(self) -> dict:
        torch = self._torch
        F = torch.nn.functional
        hr = self._batch(STAGE_BATCH)
        if self.steps == 0:
            self._init_codebook(hr)
        rec, idx, cb, cm = self.model(hr)
        loss = F.l1_loss(rec, hr) + LAMBDA_C * (cb + BETA * cm)
        adv = self.steps >= ADV_START * self.total
        if adv:
            loss = loss + LAMBDA_ADV * F.softplus(-self.disc(rec)).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        loss_d = torch.zeros(())
        if adv:
            real = hr.detach().requires_grad_(True)
            d_real = self.disc(real)
            (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
            r1 = grad.pow(2).flatten(1).sum(1).mean()
            loss_d = (F.softplus(-d_real).mean() + F.softplus(self.disc(rec.detach())).mean()
                      + 0.5 * R1_GAMMA * r1)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
        self.steps += 1
        used = int(torch.unique(idx).numel())
        return {"loss": float(loss.detach()), "l1": float(F.l1_loss(rec, hr).detach()),
                "loss_d": float(loss_d.detach()), "codes_used": used, "lr": LR}

    def state_dict(self) -> dict:
        return {"vqgan": self.model.state_dict(), "disc": self.disc.state_dict(), "steps": self.steps,
                "prior": self.prior}

    def load_state_dict(self, sd: dict) -> None:
        if sd.get("prior", self.prior) != self.prior:
            raise InputError(f"the saved codebook prior is of size {sd.get('prior')!r}, not {self.prior!r}: "
                             f"resume with --prior {sd.get('prior')}")
        try:
            self.model.load_state_dict(sd["vqgan"])
            self.disc.load_state_dict(sd["disc"])
        except (KeyError, RuntimeError) as err:
            raise InputError(f"the saved codebook prior does not fit this model: {err}") from None
        self.steps = int(sd.get("steps", 0))


class IndexerStage:
    """Stage II's runner: the latent indexer on the isotropic method's degraded pairs, targets from stage I."""

    def __init__(self, ctx) -> None:
        import torch

        from ...nets.vqgan_arch import Indexer

        self._torch, self.ctx = torch, ctx
        self.vqgan: VQGANStage = ctx.stages["vqgan"]
        self.vqgan.model.eval()
        self.indexer = Indexer(self.vqgan.model.spec).to(ctx.device)
        self.p = self.vqgan.model.spec["patch"]
        self.side = _stage_patch(ctx, self.p)
        self.opt = torch.optim.Adam(self.indexer.parameters(), lr=LR, betas=BETAS)
        self.pairs = isotropic_pairs(ctx)
        self.steps = 0

    def step(self) -> dict:
        torch = self._torch
        x, y = self.pairs.batch(STAGE_BATCH)
        x, y = x[..., : self.side, : self.side], y[..., : self.side, : self.side]
        target = self.vqgan.model.code(y)
        logits = self.indexer(x)
        loss = torch.nn.functional.cross_entropy(logits, target)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.steps += 1
        acc = float((logits.detach().argmax(1) == target).float().mean())
        return {"loss": float(loss.detach()), "accuracy": acc, "lr": LR}

    def state_dict(self) -> dict:
        return {"indexer": self.indexer.state_dict(), "steps": self.steps}

    def load_state_dict(self, sd: dict) -> None:
        try:
            self.indexer.load_state_dict(sd["indexer"])
        except (KeyError, RuntimeError) as err:
            raise InputError(f"the saved latent indexer does not fit this model: {err}") from None
        self.steps = int(sd.get("steps", 0))


class PriorPairs:
    """Stage III's pair-maker: the isotropic method's pairs; ``attach(net)`` gives the restorer the prior."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.indexer: IndexerStage = ctx.stages["indexer"]
        self.pairs = self.indexer.pairs
        info = dict(getattr(self.pairs, "info", {}) or {})
        note = self._note()
        log.info(note)
        self.info = {**info, "prior": {"size": _prior_name(ctx), **self.indexer.vqgan.model.spec},
                     "notes": [*info.get("notes", []), note]}

    def _note(self) -> str:
        """How well the indexer finds the codes on held-out pairs, and how many codes the prior uses."""
        torch = self.indexer._torch
        x, y = (torch.from_numpy(np.asarray(a, np.float32))[:, None].to(self.ctx.device)
                for a in self.pairs.validation())
        s = self.indexer.side
        x, y = x[..., :s, :s], y[..., :s, :s]
        with torch.no_grad():
            self.indexer.indexer.eval()
            target = self.indexer.vqgan.model.code(y)
            acc = float((self.indexer.indexer(x).argmax(1) == target).float().mean())
        spec = self.indexer.vqgan.model.spec
        return (f"codebook prior {_prior_name(self.ctx)} (v {spec['codes']}, d {spec['dim']}, p {spec['patch']}): "
                f"{int(torch.unique(target).numel())} codes on held-out planes, indexer finds {100 * acc:.0f} % of "
                "them from the degraded planes")

    def attach(self, net) -> None:
        """Copy stage I's codebook, decoder and encoder and stage II's indexer into the restorer (frozen)."""
        if not hasattr(net, "set_prior"):
            raise InputError("method gpemsr needs its own restoring network: leave --net out (or give --net gpemsr)")
        net.set_prior(self.indexer.vqgan.model, self.indexer.indexer)

    def batch(self, n: int):
        return self.pairs.batch(n)

    def validation(self):
        return self.pairs.validation()


GPEMSR = Method(
    name="gpemsr",
    description="large factors with a generative texture prior (GPEMSR, Shou et al.): a VQGAN codebook of the "
    "stack's lateral "
    "texture, an indexer from degraded planes to codes, and a restorer that fuses the decoded reference",
    pairs=PriorPairs,
    net="gpemsr",
    size="small",
    loss="l1_pdl",
    order=3,
    defaults={"batch_cuda": 32},
    loss_args={"alpha": "pdl_weight"},
    application=AXIAL,
    stages=(
        Stage("degradation", DEGRADATION_STEPS, DegradationLearner, when=learned_active),
        Stage("vqgan", VQGAN_STEPS, VQGANStage),
        Stage("indexer", INDEXER_STEPS, IndexerStage),
    ),
    options=(
        *ISOTROPIC.options,
        Option("prior", "small", choices=("tiny", "small", "large"), label="Codebook prior",
               help="size of the VQGAN codebook prior: tiny and small fit a CPU; large is GPEMSR's "
               "(Shou et al.: 1024 codes "
               "of 512 numbers, 16 x 16 px patches), for a GPU"),
        Option("vqgan_steps", VQGAN_STEPS, type=int, label="Codebook steps",
               help="training steps of stage I, the VQGAN that learns the stack's lateral texture"),
        Option("indexer_steps", INDEXER_STEPS, type=int, label="Indexer steps",
               help="training steps of stage II, the indexer from degraded planes to codes"),
    ),
)
