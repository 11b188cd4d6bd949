from granite_jax.model.config import PRESETS, ModelConfig, preset
from granite_jax.model.decoder import Granite

__all__ = ["Granite", "ModelConfig", "PRESETS", "preset"]
