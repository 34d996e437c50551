// Autograd of the QDI ops, in C++ so that every host differentiates through them: Python, TorchScript
// (torch.autograd.grad in a scripted model) and C++ programs that load libqallegro_ops.so and a
// TorchScript file (the LAMMPS plugin), where no Python registration exists.
//
// The chain of derivatives (schemas and their meaning in csrc/ops.cpp):
//   qdi                  -> backward: qdi_backward (adjoint method), itself differentiable;
//   qdi_backward         -> backward: qdi_double_backward (grad wrt grad_output, inputs, weights);
//   qdi_double_backward  -> backward: error (third derivatives are not implemented).
// qdi's second output, the final state, is a cache for qdi_backward, not a differentiable output;
// qdi_backward's `state` input is the same cache, and its dependence on (inputs, weights) is already
// inside qdi_double_backward's results, so it receives no gradient.
//
// Registered for the Autograd key, so the same functions serve CPU and CUDA tensors: each forward
// re-dispatches the op below autograd and the device kernel runs; each backward calls the next op
// through the dispatcher *with* autograd, so create_graph=True records the next order.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>
#include <tuple>

namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// ---- typed handles of the ops (looked up once; calls go through the full dispatcher) -----------

std::tuple<Tensor, Tensor> call_qdi(const Tensor& inputs, const Tensor& weights, c10::string_view rotation,
                                    c10::string_view entangling, c10::string_view measure,
                                    c10::string_view mode) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("qallegro::qdi", "")
                         .typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, c10::string_view,
                                                           c10::string_view, c10::string_view, c10::string_view)>();
    return op.call(inputs, weights, rotation, entangling, measure, mode);
}

std::tuple<Tensor, Tensor> call_qdi_backward(const Tensor& grad_output, const Tensor& state, const Tensor& inputs,
                                             const Tensor& weights, c10::string_view rotation,
                                             c10::string_view entangling, c10::string_view measure,
                                             c10::string_view mode) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("qallegro::qdi_backward", "")
                         .typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                                           c10::string_view, c10::string_view, c10::string_view,
                                                           c10::string_view)>();
    return op.call(grad_output, state, inputs, weights, rotation, entangling, measure, mode);
}

std::tuple<Tensor, Tensor, Tensor> call_qdi_double_backward(const std::optional<Tensor>& grad_grad_inputs,
                                                            const std::optional<Tensor>& grad_grad_weights,
                                                            const Tensor& grad_output, const Tensor& inputs,
                                                            const Tensor& weights, c10::string_view rotation,
                                                            c10::string_view entangling, c10::string_view measure,
                                                            c10::string_view mode) {
    static auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("qallegro::qdi_double_backward", "")
            .typed<std::tuple<Tensor, Tensor, Tensor>(const std::optional<Tensor>&, const std::optional<Tensor>&,
                                                      const Tensor&, const Tensor&, const Tensor&, c10::string_view,
                                                      c10::string_view, c10::string_view, c10::string_view)>();
    return op.call(grad_grad_inputs, grad_grad_weights, grad_output, inputs, weights, rotation, entangling, measure,
                   mode);
}

// The four circuit strings travel with the autograd node.
void save_config(AutogradContext* ctx, const std::string& rotation, const std::string& entangling,
                 const std::string& measure, const std::string& mode) {
    ctx->saved_data["rotation"] = rotation;
    ctx->saved_data["entangling"] = entangling;
    ctx->saved_data["measure"] = measure;
    ctx->saved_data["mode"] = mode;
}

struct Config {
    std::string rotation, entangling, measure, mode;
};

Config load_config(AutogradContext* ctx) {
    return {ctx->saved_data["rotation"].toStringRef(), ctx->saved_data["entangling"].toStringRef(),
            ctx->saved_data["measure"].toStringRef(), ctx->saved_data["mode"].toStringRef()};
}

// An undefined tensor (a zero gradient) as an absent Tensor? argument.
std::optional<Tensor> present(const Tensor& t) {
    return t.defined() ? std::optional<Tensor>(t) : std::nullopt;
}

std::optional<Tensor> present_opt(const std::optional<Tensor>& t) {
    return t.has_value() ? present(*t) : std::nullopt;
}

// ---- qdi_double_backward: last differentiable order --------------------------------------------

class QdiDoubleBackward : public torch::autograd::Function<QdiDoubleBackward> {
   public:
    // Tensor? arguments stay optionals: Function::apply treats an absent one as a non-tensor argument
    // (an undefined Tensor would be taken for a variable and fail)
    static variable_list forward(AutogradContext* ctx, const std::optional<Tensor>& grad_grad_inputs,
                                 const std::optional<Tensor>& grad_grad_weights, const Tensor& grad_output,
                                 const Tensor& inputs, const Tensor& weights, const std::string& rotation,
                                 const std::string& entangling, const std::string& measure,
                                 const std::string& mode) {
        at::AutoDispatchBelowADInplaceOrView below;
        auto [jvp, gx, gw] = call_qdi_double_backward(grad_grad_inputs, grad_grad_weights, grad_output, inputs,
                                                      weights, rotation, entangling, measure, mode);
        return {jvp, gx, gw};
    }

    static variable_list backward(AutogradContext* ctx, variable_list grads) {
        TORCH_CHECK_NOT_IMPLEMENTED(false,
                                    "qallegro::qdi: third derivatives are not implemented (forces need the "
                                    "second only); qallegro::qdi_double_backward cannot be differentiated");
        return {};
    }
};

// ---- qdi_backward: differentiable adjoint VJP ----------------------------------------------------

class QdiBackward : public torch::autograd::Function<QdiBackward> {
   public:
    static variable_list forward(AutogradContext* ctx, const Tensor& grad_output, const Tensor& state,
                                 const Tensor& inputs, const Tensor& weights, const std::string& rotation,
                                 const std::string& entangling, const std::string& measure,
                                 const std::string& mode) {
        ctx->set_materialize_grads(false);
        save_config(ctx, rotation, entangling, measure, mode);
        ctx->save_for_backward({grad_output, inputs, weights});
        at::AutoDispatchBelowADInplaceOrView below;
        auto [gx, gw] = call_qdi_backward(grad_output, state, inputs, weights, rotation, entangling, measure, mode);
        return {gx, gw};
    }

    static variable_list backward(AutogradContext* ctx, variable_list grads) {
        // grads: (d/d grad_inputs, d/d grad_weights); either may be undefined (= zero)
        const Tensor& grad_grad_inputs = grads[0];
        const Tensor& grad_grad_weights = grads[1];
        variable_list out(8);  // grad_output, state, inputs, weights, 4 strings
        if (!grad_grad_inputs.defined() && !grad_grad_weights.defined()) return out;
        const auto saved = ctx->get_saved_variables();
        const Config c = load_config(ctx);
        // through the dispatcher with autograd, so a third derivative reaches QdiDoubleBackward's error
        auto [g_grad_output, g_inputs, g_weights] =
            call_qdi_double_backward(present(grad_grad_inputs), present(grad_grad_weights), saved[0], saved[1],
                                     saved[2], c.rotation, c.entangling, c.measure, c.mode);
        out[0] = g_grad_output;
        out[2] = g_inputs;
        out[3] = g_weights;
        return out;
    }
};

// ---- qdi: forward simulation, final state as a non-differentiable cache --------------------------

class Qdi : public torch::autograd::Function<Qdi> {
   public:
    static variable_list forward(AutogradContext* ctx, const Tensor& inputs, const Tensor& weights,
                                 const std::string& rotation, const std::string& entangling,
                                 const std::string& measure, const std::string& mode) {
        ctx->set_materialize_grads(false);
        save_config(ctx, rotation, entangling, measure, mode);
        Tensor y, state;
        {
            at::AutoDispatchBelowADInplaceOrView below;
            std::tie(y, state) = call_qdi(inputs, weights, rotation, entangling, measure, mode);
        }
        ctx->mark_non_differentiable({state});
        ctx->save_for_backward({inputs, weights, state});
        return {y, state};
    }

    static variable_list backward(AutogradContext* ctx, variable_list grads) {
        variable_list out(6);  // inputs, weights, 4 strings
        const Tensor& grad_y = grads[0];  // grads[1] (the state's) is never defined: non-differentiable
        if (!grad_y.defined()) return out;
        const auto saved = ctx->get_saved_variables();
        const Config c = load_config(ctx);
        auto [gx, gw] = call_qdi_backward(grad_y.contiguous(), saved[2], saved[0], saved[1], c.rotation, c.entangling,
                                          c.measure, c.mode);
        out[0] = gx;
        out[1] = gw;
        return out;
    }
};

// ---- the Autograd-key kernels (signatures are the schemas') --------------------------------------

std::tuple<Tensor, Tensor> qdi_autograd(const Tensor& inputs, const Tensor& weights, c10::string_view rotation,
                                        c10::string_view entangling, c10::string_view measure,
                                        c10::string_view mode) {
    auto out = Qdi::apply(inputs, weights, std::string(rotation), std::string(entangling), std::string(measure),
                          std::string(mode));
    return {out[0], out[1]};
}

std::tuple<Tensor, Tensor> qdi_backward_autograd(const Tensor& grad_output, const Tensor& state,
                                                 const Tensor& inputs, const Tensor& weights,
                                                 c10::string_view rotation, c10::string_view entangling,
                                                 c10::string_view measure, c10::string_view mode) {
    auto out = QdiBackward::apply(grad_output, state, inputs, weights, std::string(rotation), std::string(entangling),
                                  std::string(measure), std::string(mode));
    return {out[0], out[1]};
}

std::tuple<Tensor, Tensor, Tensor> qdi_double_backward_autograd(
    const std::optional<Tensor>& grad_grad_inputs, const std::optional<Tensor>& grad_grad_weights,
    const Tensor& grad_output, const Tensor& inputs, const Tensor& weights, c10::string_view rotation,
    c10::string_view entangling, c10::string_view measure, c10::string_view mode) {
    auto out = QdiDoubleBackward::apply(present_opt(grad_grad_inputs), present_opt(grad_grad_weights), grad_output,
                                        inputs, weights, std::string(rotation), std::string(entangling),
                                        std::string(measure), std::string(mode));
    return {out[0], out[1], out[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(qallegro, Autograd, m) {
    m.impl("qdi", &qdi_autograd);
    m.impl("qdi_backward", &qdi_backward_autograd);
    m.impl("qdi_double_backward", &qdi_double_backward_autograd);
}
