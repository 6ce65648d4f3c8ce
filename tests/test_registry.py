"""The registry: built-in catalog, user catalogs, ADR-023 validation."""

from __future__ import annotations

import warnings

import pytest

from mrlkit import errors, registry
from mrlkit.registry import get_spec, list_specs, validate_dim


def test_catalog_has_the_documented_models():
    names = {s.name for s in list_specs()}
    assert len(names) >= 12
    nomic = get_spec("nomic-embed-text")
    assert (nomic.native_dim, nomic.mrl_dims, nomic.transform) == \
        (768, (64, 128, 256, 512, 768), "layer_norm")
    assert nomic.query_prompt == "search_query: " and nomic.document_prompt == "search_document: "
    assert get_spec("mxbai-embed-large-v1").query_prompt.startswith("Represent this sentence")
    assert get_spec("text-embedding-3-large").native_dim == 3072
    assert get_spec("Qwen3-Embedding-8B").min_dim == 32
    assert get_spec("embeddinggemma-300m").mrl_dims == (128, 256, 512, 768)
    assert get_spec("snowflake-arctic-embed-m-v1.5").mrl_dims == (256, 768)
    minilm = get_spec("all-MiniLM-L6-v2")
    assert (minilm.native_dim, minilm.supports_mrl) == (384, False)


@pytest.mark.parametrize("dim, expected", [(None, 768), (768, 768), (64, 64), (512, 512)])
def test_validate_allowed(dim, expected):
    assert validate_dim("nomic-embed-text", dim) == expected


def test_outside_mrl_list_lists_allowed_values():
    with pytest.raises(errors.DimensionError, match="64, 128, 256, 512, 768"):
        validate_dim("nomic-embed-text", 100)


@pytest.mark.parametrize("dim", [0, -8, 769, 4096])
def test_zero_negative_and_above_native_are_refused(dim):
    with pytest.raises(errors.DimensionError):
        validate_dim("nomic-embed-text", dim)


def test_any_dimension_models_respect_their_minimum():
    assert validate_dim("Qwen3-Embedding-0.6B", 100) == 100
    with pytest.raises(errors.DimensionError, match="from 32 to 1024"):
        validate_dim("Qwen3-Embedding-0.6B", 16)
    assert validate_dim("text-embedding-3-small", 7) == 7


def test_non_mrl_needs_permission_and_warns_once():
    with pytest.raises(errors.NotMatryoshkaError, match="not Matryoshka-trained"):
        validate_dim("all-MiniLM-L6-v2", 128)
    assert validate_dim("all-MiniLM-L6-v2", 384) == 384  # native is always fine
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert validate_dim("all-MiniLM-L6-v2", 128, allow_non_mrl=True) == 128
        assert validate_dim("all-MiniLM-L6-v2", 64, allow_non_mrl=True) == 64
    assert [w.category for w in caught] == [registry.NonMatryoshkaWarning]


def test_unknown_model_suggests():
    with pytest.raises(errors.UnknownModelError, match="did you mean nomic-embed-text"):
        get_spec("NOMIC-EMBED-TEXT")
    with pytest.raises(errors.UnknownModelError, match="mrlkit models"):
        get_spec("zzz")


def test_user_catalog_from_environment(tmp_path, monkeypatch):
    path = tmp_path / "models.toml"
    path.write_text('[[model]]\nname = "my-mrl"\nprovider = "openai"\nnative_dim = 512\n'
                    'supports_mrl = true\nmrl_dims = [64, 256]\n')
    monkeypatch.setenv("MRLKIT_CATALOG", str(path))
    registry.reset_catalog()
    spec = get_spec("my-mrl")
    assert spec.mrl_dims == (64, 256, 512)  # native is always allowed
    assert spec.source == str(path)
    assert len(list_specs()) >= 13


@pytest.mark.parametrize("body, field", [
    ('name = "x"\nprovider = "openai"\nnative_dim = "big"\n', "native_dim"),
    ('name = "x"\nprovider = "openai"\n', "native_dim"),
    ('name = "x"\nprovider = "cohere"\nnative_dim = 8\n', "provider"),
    ('name = "x"\nprovider = "openai"\nnative_dim = 8\nsupports_mrl = true\n'
     'mrl_dims = [4, 16]\n', "mrl_dims"),
    ('name = "x"\nprovider = "openai"\nnative_dim = 8\nsupports_mrl = true\n', "mrl_dims"),
    ('name = "x"\nprovider = "openai"\nnative_dim = 8\ncolour = "red"\n', "colour"),
    ('name = "x"\nprovider = "openai"\nnative_dim = 8\ntransform = "pca"\n', "transform"),
])
def test_bad_user_catalog_names_file_and_field(tmp_path, body, field):
    path = tmp_path / "bad.toml"
    path.write_text("[[model]]\n" + body)
    with pytest.raises(errors.CatalogError) as info:
        registry.load_catalog(path)
    assert str(path) in str(info.value) and field in str(info.value)


def test_invalid_toml_and_missing_file(tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text("[[model]\n")
    with pytest.raises(errors.CatalogError, match="broken.toml: not valid TOML"):
        registry.load_catalog(bad)
    with pytest.raises(errors.CatalogError, match="cannot read"):
        registry.load_catalog(tmp_path / "nope.toml")


def test_register_from_python():
    spec = registry.register({"name": "tiny", "provider": "ollama", "native_dim": 64,
                              "supports_mrl": True, "mrl_dims": [16, 32, 64]})
    assert get_spec("tiny") is spec
    with pytest.raises(errors.CatalogError, match="already registered"):
        registry.register(spec)


def test_default_dims():
    assert get_spec("all-MiniLM-L6-v2").default_dims() == [32, 64, 128, 256, 384]
    assert get_spec("nomic-embed-text").default_dims() == [64, 128, 256, 512, 768]
    assert get_spec("Qwen3-Embedding-0.6B").default_dims() == [32, 64, 128, 256, 512, 1024]
