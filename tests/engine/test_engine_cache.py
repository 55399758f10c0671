"""Output-cache budgets (GPU -> CPU -> dropped) and the model cache, with fake tensors (no torch)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fewstep.app.cache import GB, CacheSet, ModelCache, encode_value, parse_policy


class FakeDevice(SimpleNamespace):
    def __str__(self) -> str:
        return self.name


class FakeTensor:
    """Duck-typed tensor: nbytes, device.type, to(device)."""

    def __init__(self, nbytes: int, device: str = "cuda") -> None:
        self.nbytes = nbytes
        self.device = FakeDevice(type=device.split(":")[0], name=device)
        self.where = device

    def to(self, device: str) -> FakeTensor:
        return FakeTensor(self.nbytes, device)

    def pin_memory(self) -> FakeTensor:
        return self


def test_vram_budget_moves_oldest_to_cpu_then_ram_budget_drops():
    caches = CacheSet("vram:2,ram:2")
    caches.put("a", [[FakeTensor(GB, "cuda:1")]], None)
    caches.put("b", [[FakeTensor(GB)]], None)
    assert caches.stats()["vram_bytes"] == 2 * GB and caches.stats()["ram_bytes"] == 0
    caches.put("c", [[FakeTensor(GB)]], None)  # over 2 GB of VRAM: the oldest ("a") moves to the CPU
    assert caches.outputs.entries["a"].outputs[0][0].device.type == "cpu"
    assert caches.stats()["vram_bytes"] == 2 * GB and caches.stats()["ram_bytes"] == GB
    caches.put("d", [[FakeTensor(GB)]], None)
    caches.put("e", [[FakeTensor(GB)]], None)  # a, b, c on CPU = 3 GB > 2 GB: "a" is dropped
    assert "a" not in caches.outputs.entries and caches.stats()["ram_bytes"] == 2 * GB
    entry = caches.get("b")  # used again: back on the GPU it came from
    assert entry.outputs[0][0].where == "cuda" and entry.moved_from is None
    assert caches.stats()["vram_bytes"] <= 2 * GB


def test_lru_and_ram_policies():
    caches = CacheSet("lru:2")
    for key in "abc":
        caches.put(key, [[1]], None)
    assert list(caches.outputs.entries) == ["b", "c"]
    caches.set_policy("ram:1")
    caches.put("big", [[FakeTensor(GB // 2, "cpu")]], None)
    caches.put("big2", [[FakeTensor(GB, "cpu")]], None)
    assert "big" not in caches.outputs.entries and "big2" in caches.outputs.entries


@pytest.mark.parametrize("text", ["lru", "lru:-1", "mem:3", "vram:x"])
def test_bad_policies(text):
    with pytest.raises(ValueError, match="bad cache policy"):
        parse_policy(text)


def test_encode_value_distinguishes_values():
    assert encode_value(-1) != encode_value(-2)
    assert encode_value({"a": 1, "b": [1, 2]}) == encode_value({"b": [1, 2], "a": 1})
    assert encode_value(object()) != encode_value(object())  # incomparable objects never hit


def test_encode_value_fingerprints_tensor_content():
    torch = pytest.importorskip("torch")
    a = torch.arange(6, dtype=torch.float32)
    assert encode_value(a) == encode_value(a.clone())
    assert encode_value(a) != encode_value(a + 1)
    assert encode_value(a) != encode_value(a.reshape(2, 3))


def test_model_cache_keys_by_file_dtype_device(tmp_path):
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"x")
    cache = ModelCache(max_models=4)
    loads = []

    def loader():
        loads.append(1)
        return object()

    first = cache.get_or_load(weights, "fp16", "cpu", loader)
    assert cache.get_or_load(weights, "fp16", "cpu", loader) is first and len(loads) == 1
    cache.get_or_load(weights, "fp32", "cpu", loader)
    assert len(loads) == 2
    weights.write_bytes(b"changed")  # a replaced file reloads
    cache.get_or_load(weights, "fp16", "cpu", loader)
    assert len(loads) == 3 and cache.stats()["models"] == 3


def test_model_cache_offloads_under_vram_budget(tmp_path):
    cache = ModelCache(vram_bytes=1.5 * GB)
    a = cache.get_or_load(tmp_path / "a", "fp16", "cuda", lambda: FakeTensor(GB))
    cache.get_or_load(tmp_path / "b", "fp16", "cuda", lambda: FakeTensor(GB))
    assert cache.stats()["offloaded"] == 1 and cache.stats()["vram_bytes"] == GB
    back = cache.get_or_load(tmp_path / "a", "fp16", "cuda", lambda: pytest.fail("reloaded"))
    assert back.device.type == "cuda" and back is not a  # moved back with .to()


def test_free(tmp_path):
    caches = CacheSet("lru:10")
    caches.put("a", [[1]], None)
    caches.models.get_or_load(tmp_path / "m", "fp16", "cpu", object)
    caches.free(unload_models=False, free_memory=True)
    assert caches.stats()["entries"] == 0 and caches.stats()["models"]["models"] == 1
    caches.free(unload_models=True, free_memory=False)
    assert caches.stats()["models"]["models"] == 0
