// Autograd of allegro_tp and allegro_tp_backward, in C++ so that every host differentiates through
// them: Python, TorchScript and C++ programs that load libqallegro_ops.so with a TorchScript model
// (the LAMMPS plugin), where no Python registration exists and forces would silently miss the
// tensor-product terms.
//
//   allegro_tp          -> backward: allegro_tp_backward (outputs masked by which inputs need grad)
//   allegro_tp_backward -> backward: allegro_tp and allegro_tp_backward calls. The op is linear in each
//                          differentiable input (tensor_features, env_edge, node_norm, weights), so
//                          L = <g, tp(x, y, n, w)> is multilinear and the derivative of the backward
//                          along (ggx, ggy, ggn, ggw) is a sum of terms with one argument replaced by
//                          its tangent: forward calls for d grad_out, backward calls for the rest.
// Both call the ops through the dispatcher with autograd, so derivatives of every order exist.
// Registered for the Autograd key: the same functions serve CPU and CUDA tensors.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <array>
#include <tuple>

namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Mask = std::array<bool, 4>;
using Grads4 = std::tuple<Tensor, Tensor, Tensor, Tensor>;

Tensor call_tp(const Tensor& x, const Tensor& y, const Tensor& center, const Tensor& nn, const Tensor& w,
               const Tensor& idx, const Tensor& val, int64_t dim_out) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("qallegro::allegro_tp", "")
                         .typed<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                       const Tensor&, const Tensor&, int64_t)>();
    return op.call(x, y, center, nn, w, idx, val, dim_out);
}

Grads4 call_tp_backward(const Tensor& g, const Tensor& x, const Tensor& y, const Tensor& center, const Tensor& nn,
                        const Tensor& w, const Tensor& idx, const Tensor& val, Mask mask) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("qallegro::allegro_tp_backward", "")
                         .typed<Grads4(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                       const Tensor&, const Tensor&, const Tensor&, Mask)>();
    return op.call(g, x, y, center, nn, w, idx, val, mask);
}

Tensor sum_defined(const Tensor& a, const Tensor& b) { return a.defined() ? a.add(b) : b; }

class AllegroTpBackward : public torch::autograd::Function<AllegroTpBackward> {
   public:
    static variable_list forward(AutogradContext* ctx, const Tensor& g, const Tensor& x, const Tensor& y,
                                 const Tensor& center, const Tensor& nn, const Tensor& w, const Tensor& idx,
                                 const Tensor& val, Mask mask) {
        ctx->set_materialize_grads(false);
        ctx->saved_data["mask"] = std::vector<bool>(mask.begin(), mask.end());
        ctx->save_for_backward({g, x, y, center, nn, w, idx, val});
        at::AutoDispatchBelowADInplaceOrView below;
        auto [gx, gy, gn, gw] = call_tp_backward(g, x, y, center, nn, w, idx, val, mask);
        return {gx, gy, gn, gw};
    }

    static variable_list backward(AutogradContext* ctx, variable_list grads) {
        const auto saved = ctx->get_saved_variables();
        const Tensor &g = saved[0], &center = saved[3], &idx = saved[6], &val = saved[7];
        const std::array<Tensor, 4> args = {saved[1], saved[2], saved[4], saved[5]};  // x, y, nn, w
        const auto mask = ctx->saved_data["mask"].toBoolList();
        // variable inputs in order: g 0, x 1, y 2, center 3, nn 4, w 5, idx 6, val 7
        const bool need_g = ctx->needs_input_grad(0);
        const Mask need = {ctx->needs_input_grad(1), ctx->needs_input_grad(2), ctx->needs_input_grad(4),
                           ctx->needs_input_grad(5)};
        const int64_t dim_out = g.size(2);
        Tensor d_g;
        std::array<Tensor, 4> d_args;
        for (size_t slot = 0; slot < 4; ++slot) {
            // an undefined incoming gradient, or one of an output the forward did not compute, is zero
            if (!grads[slot].defined() || !mask.get(slot)) continue;
            std::array<Tensor, 4> sub = args;
            sub[slot] = grads[slot];
            if (need_g) d_g = sum_defined(d_g, call_tp(sub[0], sub[1], center, sub[2], sub[3], idx, val, dim_out));
            Mask sub_mask;
            bool any = false;
            for (size_t a = 0; a < 4; ++a) {
                sub_mask[a] = need[a] && a != slot;  // each output is linear in, not a function of, its own input
                any = any || sub_mask[a];
            }
            if (!any) continue;
            auto parts = call_tp_backward(g, sub[0], sub[1], center, sub[2], sub[3], idx, val, sub_mask);
            const std::array<Tensor, 4> got = {std::get<0>(parts), std::get<1>(parts), std::get<2>(parts),
                                               std::get<3>(parts)};
            for (size_t a = 0; a < 4; ++a)
                if (sub_mask[a]) d_args[a] = sum_defined(d_args[a], got[a]);
        }
        // g, x, y, center, nn, w, idx, val, mask
        return {d_g, d_args[0], d_args[1], Tensor(), d_args[2], d_args[3], Tensor(), Tensor(), Tensor()};
    }
};

class AllegroTp : public torch::autograd::Function<AllegroTp> {
   public:
    static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& y, const Tensor& center,
                          const Tensor& nn, const Tensor& w, const Tensor& idx, const Tensor& val, int64_t dim_out) {
        ctx->set_materialize_grads(false);
        ctx->save_for_backward({x, y, center, nn, w, idx, val});
        at::AutoDispatchBelowADInplaceOrView below;
        return call_tp(x, y, center, nn, w, idx, val, dim_out);
    }

    static variable_list backward(AutogradContext* ctx, variable_list grads) {
        variable_list out(8);  // x, y, center, nn, w, idx, val, dim_out
        if (!grads[0].defined()) return out;
        const auto s = ctx->get_saved_variables();
        // variable inputs in order: x 0, y 1, center 2, nn 3, w 4, idx 5, val 6
        const Mask need = {ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(3),
                           ctx->needs_input_grad(4)};
        if (!(need[0] || need[1] || need[2] || need[3])) return out;
        // through the dispatcher with autograd: create_graph records AllegroTpBackward
        auto [gx, gy, gn, gw] = call_tp_backward(grads[0], s[0], s[1], s[2], s[3], s[4], s[5], s[6], need);
        if (need[0]) out[0] = gx;
        if (need[1]) out[1] = gy;
        if (need[2]) out[3] = gn;
        if (need[3]) out[4] = gw;
        return out;
    }
};

Tensor allegro_tp_autograd(const Tensor& x, const Tensor& y, const Tensor& center, const Tensor& nn, const Tensor& w,
                           const Tensor& idx, const Tensor& val, int64_t dim_out) {
    return AllegroTp::apply(x, y, center, nn, w, idx, val, dim_out);
}

Grads4 allegro_tp_backward_autograd(const Tensor& g, const Tensor& x, const Tensor& y, const Tensor& center,
                                    const Tensor& nn, const Tensor& w, const Tensor& idx, const Tensor& val,
                                    Mask mask) {
    auto out = AllegroTpBackward::apply(g, x, y, center, nn, w, idx, val, mask);
    return {out[0], out[1], out[2], out[3]};
}

}  // namespace

TORCH_LIBRARY_IMPL(qallegro, Autograd, m) {
    m.impl("allegro_tp", &allegro_tp_autograd);
    m.impl("allegro_tp_backward", &allegro_tp_backward_autograd);
}
