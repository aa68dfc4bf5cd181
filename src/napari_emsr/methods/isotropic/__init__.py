"""The isotropic method (A2I-3DEM, Khateri et al.): learn from the stack's own lateral planes degraded the way z
was cut, restore every xz/yz plane.

- :mod:`.pairs`: the pair-maker (section profile fitted, judged or fixed; matched noise);
- :mod:`.degradation`: the learned degradation (a CycleGAN between lateral and axial planes, after Deng et al.,
  MICCAI 2020), an optional first stage;
- :mod:`.apply`: how the model is applied (the lazy reconstruction of :mod:`napari_emsr.reconstruct`), shared
  with interpolation and the large-factor prior method.

Importing this package does not import torch.
"""

from __future__ import annotations

from ...degrade import NOISES, PROFILE_DESCRIPTIONS, PROFILES
from .. import Method, Option, Stage, register_method
from .apply import AXIAL
from .degradation import DEFAULT_STEPS as DEGRADATION_STEPS
from .degradation import SIZES as DEGRADATION_SIZES
from .degradation import DegradationLearner, learned_active
from .pairs import N_PHASES, LateralPairs, degradation_ops, isotropic_pairs, matched_noise

__all__ = ["ISOTROPIC", "N_PHASES", "LateralPairs", "degradation_ops", "isotropic_pairs", "matched_noise"]

SECTION_CHOICES = ("auto", *PROFILES, "fitted", "judged", "learned", "mixed")
SECTION_DESCRIPTIONS = {
    **PROFILE_DESCRIPTIONS,
    "auto": "fitted to the stack (the default): the slab thickness and edge softness whose simulated sections "
    "have the z spectrum of the stack",
    "fitted": "a slab of --thickness F with Gaussian edges of --softness F (fitted to the stack when not given)",
    "judged": "experimental: the fitted profile or point sampling, whichever predicts the stack's own held-out "
    "sections better after a short training of each (--judge-steps); benchmarks/bench_degradation.py --methods "
    "judged measures how it compares with auto",
    "learned": "experimental: learned from the stack by a CycleGAN between its lateral and axial planes (Deng et al., "
    "MICCAI 2020), before the restoring network trains; benchmarks/bench_degradation.py measures how it compares "
    "with auto",
}

ISOTROPIC = Method(
    name="isotropic",
    description="self-supervised isotropic reconstruction (A2I-3DEM, Khateri et al.): learn from the stack's own "
    "xy planes degraded like z, restore every xz/yz plane",
    pairs=isotropic_pairs,
    net="rescnn-sections",
    size="small",
    loss="l1_pdl",
    order=3,
    # NOTE: batch_cuda: on a large GPU, batch 8 leaves it idle; 64 is the measured choice there
    # (benchmarks/bench_speed.py, README). The CPU batch is TRAINING_DEFAULTS["batch"].
    defaults={"batch_cuda": 64},
    loss_args={"alpha": "pdl_weight"},
    application=AXIAL,
    stages=(Stage("degradation", DEGRADATION_STEPS, DegradationLearner, when=learned_active),),
    options=(
        # NOTE: profile "auto" fits the section profile to the stack (profile_fit.fit_profile); the old three-way
        # estimate (benchmarks/old_profile.py) named the wrong profile on held-out slab stacks. A wrong
        # guess is costly and assuming more blur than the stack has costs most, so the estimate leans to the less
        # blurred profile when it is unsure (benchmarks/bench_profile.py, bench_quality.py --train-profile).
        Option("profile", "auto", choices=SECTION_CHOICES, label="Sections",
               help="how the z sections were cut: auto (a slab of fitted thickness and edge softness, fitted to the "
               "stack's z spectrum), point (thin samples, e.g. FIB-SEM), slab (sections integrate their thickness "
               "F, e.g. serial-section TEM), gaussian (a soft slab), fitted (--thickness/--softness), learned "
               "(experimental: a CycleGAN learns the degradation from the stack first, as Deng et al. do), or "
               "mixed (point, slab and "
               "gaussian at random)",
               descriptions=SECTION_DESCRIPTIONS),
        Option("thickness", None, type=float, label="Section thickness",
               help="--profile fitted: slab thickness in units of the section spacing F (1 = a slab of F); fitted "
               "to the stack when not given"),
        Option("softness", None, type=float, label="Edge softness",
               help="--profile fitted: Gaussian edge (standard deviation) of the slab, in units of F; fitted to the "
               "stack when not given"),
        Option("judge_steps", 300, type=int, label="Judge steps",
               help="--profile judged: training steps of each candidate profile's judge (at twice the section "
               "spacing, on every other section)"),
        Option("degradation_steps", DEGRADATION_STEPS, type=int, label="Degradation steps",
               help="--profile learned: training steps of the CycleGAN that learns the degradation (Deng et al.)"),
        Option("degradation_size", "small", choices=tuple(DEGRADATION_SIZES), label="Degradation networks",
               help="--profile learned: size of the CycleGAN's networks (Deng et al.: 64 filters, 9 residual blocks)"),
        Option("noise", "auto", choices=("auto", *NOISES), label="Section noise",
               help="noise added to the simulated sections: auto gives thick simulated sections back the noise their "
               "blur averaged away, and point sections fresh noise at the stack's level (they would share theirs "
               "with the target), measured on the stack"),
        Option("noise_level", 0.0, type=float, label="Noise level",
               help="noise sigma in normalised units (0-1 range) for --noise gaussian/poisson-gaussian"),
        Option("pdl_weight", 0.01, type=float, label="PDL weight",
               help="weight of the projected distribution loss next to L1 (A2I-3DEM, Khateri et al.: 0.01)"),
    ),
)

register_method(ISOTROPIC, replace=True)
