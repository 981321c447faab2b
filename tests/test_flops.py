"""common.flops: the analytic FLOP counts (2 x multiply-accumulates) of layers, models and a GAN step."""
from __future__ import annotations

import keras
import pytest
from keras import layers

from common.flops import flops_by_layer, forward_flops, gan_step_flops, layer_flops, train_step_flops


def _model(inputs, outputs):
    return keras.Model(inputs, outputs)


def test_dense_is_two_times_batch_in_out():
    x = keras.Input((100,))
    model = _model(x, layers.Dense(500)(x))
    assert forward_flops(model, batch=32) == 2 * 32 * 100 * 500


def test_dense_per_position_counts_every_position():
    x = keras.Input((6, 6, 512))  # SRGAN's Dense on a feature map
    model = _model(x, layers.Dense(1024)(x))
    assert forward_flops(model, batch=4) == 2 * 4 * 6 * 6 * 512 * 1024


def test_conv2d_same_and_strided():
    x = keras.Input((64, 64, 3))
    y = layers.Conv2D(128, 5, padding="same")(x)  # 64x64 out
    z = layers.Conv2D(256, 3, strides=2, padding="valid")(y)  # (64 - 3) // 2 + 1 = 31
    model = _model(x, z)
    rows = [r for r in flops_by_layer(model, batch=2) if r["flops"]]
    assert rows[0]["flops"] == 2 * 2 * 64 * 64 * 128 * (5 * 5 * 3)
    assert rows[1]["output"] == [(2, 31, 31, 256)]
    assert rows[1]["flops"] == 2 * 2 * 31 * 31 * 256 * (3 * 3 * 128)


def test_conv3d_and_transposed_convolutions():
    x = keras.Input((8, 8, 8, 4))
    y = layers.Conv3D(16, 4, strides=2, padding="same")(x)  # 4^3 x 16
    z = layers.Conv3DTranspose(8, 4, strides=2, padding="same")(y)  # 8^3 x 8
    w = layers.Conv2DTranspose(5, 3, strides=2, padding="same")(layers.Reshape((16, 4, 16))(y))
    model = _model(x, [z, w])
    rows = {r["class"]: r["flops"] for r in flops_by_layer(model, batch=3)}
    assert rows["Conv3D"] == 2 * 3 * 4 ** 3 * 16 * (4 ** 3 * 4)
    # a transposed conv scatters every input value through k^d x out weights
    assert rows["Conv3DTranspose"] == 2 * 3 * 4 ** 3 * 16 * (4 ** 3 * 8)
    assert rows["Conv2DTranspose"] == 2 * 3 * 16 * 4 * 16 * (3 * 3 * 5)


def test_model_is_the_sum_of_its_layers_and_elementwise_layers_count_zero():
    x = keras.Input((16, 16, 3))
    y = layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    y = layers.LeakyReLU(0.2)(layers.BatchNormalization()(y))
    y = layers.MaxPooling2D()(y)
    y = layers.Dense(4)(layers.Flatten()(y))
    model = _model(x, layers.Activation("sigmoid")(y))
    conv = 2 * 5 * 16 * 16 * 8 * (3 * 3 * 3)
    dense = 2 * 5 * (8 * 8 * 8) * 4
    rows = flops_by_layer(model, batch=5)
    assert {r["class"]: r["flops"] for r in rows if r["class"] not in ("Conv2D", "Dense")} == {
        "BatchNormalization": 0, "LeakyReLU": 0, "MaxPooling2D": 0, "Flatten": 0, "Activation": 0}
    assert forward_flops(model, batch=5) == conv + dense == sum(r["flops"] for r in rows)


def test_nested_models_shared_layers_and_unknown_spatial_dims():
    inner_in = keras.Input((None, None, 3))
    inner = keras.Model(inner_in, layers.Conv2D(4, 3, padding="same")(inner_in), name="inner")
    x = keras.Input((None, None, 3))
    shared = layers.Conv2D(3, 1)
    model = _model(x, inner(shared(shared(x))))  # the shared layer is called (and counted) twice
    with pytest.raises(ValueError, match="input_shape"):
        forward_flops(model, batch=1)
    expected = 2 * (2 * 10 * 12 * 3 * 3) + 2 * 10 * 12 * 4 * (3 * 3 * 3)
    assert forward_flops(model, batch=1, input_shape=(10, 12, 3)) == expected
    assert any(r["layer"].startswith("inner/") for r in flops_by_layer(model, 1, (10, 12, 3)))


def test_custom_layers_with_a_kernel_are_counted():
    from chapters.pgan.layers import EqualizedConv2D, EqualizedDense

    x = keras.Input((8, 8, 6))
    y = EqualizedConv2D(10, 3)(x)
    z = EqualizedDense(7)(layers.Flatten()(y))
    model = _model(x, z)
    assert forward_flops(model, batch=2) == 2 * 2 * 8 * 8 * 10 * (3 * 3 * 6) + 2 * 2 * (8 * 8 * 10) * 7


def test_layer_flops_of_a_layer_without_weights_is_zero():
    assert layer_flops(layers.UpSampling2D(), [(1, 4, 4, 3)], [(1, 8, 8, 3)]) == 0


def test_train_step_rule():
    step = train_step_flops(10.0, 100.0)
    assert step["d_step"] == 10 + 3 * 100 * 2  # G makes the fakes; D forward + backward on real and fake
    assert step["g_step"] == 3 * 10 + 2 * 100  # G forward + backward; D forward + input gradient
    assert step["total"] == step["d_step"] + step["g_step"]
    assert train_step_flops(10.0, 100.0, fakes_for_d=False, extra=5.0)["total"] == 600 + 30 + 200 + 5
    assert train_step_flops(10.0, 100.0, wgan_gp=True)["d_step"] == 10 + 12 * 100
    assert train_step_flops(10.0, 100.0, r1=True)["d_step"] == 10 + 9 * 100
    z = keras.Input((4,))
    g = _model(z, layers.Dense(6)(z))
    image = keras.Input((6,))
    d = _model(image, layers.Dense(1)(image))
    counted = gan_step_flops(g, d, batch=8)
    assert counted["g_forward"] == 2 * 8 * 4 * 6 and counted["d_forward"] == 2 * 8 * 6
    assert counted["total"] == train_step_flops(2 * 8 * 4 * 6, 2 * 8 * 6)["total"]


@pytest.mark.parametrize("loss, d_multiple", [("logistic", 9), ("wgan-gp", 12)])
def test_the_pgan_bench_case_runs_and_counts_the_step_of_its_loss(loss, d_multiple):
    from bench import precision

    built = precision.pgan(level=1, batch=4, max_filters=8, latent_dim=8, fmap_base=64, loss=loss)()
    built.step()  # one compiled step of that loss runs
    counts = built.flops
    assert counts["d_step"] == pytest.approx(counts["g_forward"] + d_multiple * counts["d_forward"])
