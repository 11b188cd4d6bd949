"""Test session setup: 8 fake CPU devices so sharded tests run anywhere.

Tests that want one device build their mesh from `jax.devices()[:1]`.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
