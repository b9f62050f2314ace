// Built-in architectures, as layer lists (the same thing a config file can spell out).
#include "core/net.h"

namespace deeptrain {
namespace {

struct Builder {
  proto::ModelConfig m;
  void conv(const std::string& name, int out, int kernel, int pad) {
    auto* l = m.add_layer();
    l->set_name(name);
    l->mutable_conv()->set_out_channels(out);
    l->mutable_conv()->set_kernel(kernel);
    l->mutable_conv()->set_pad(pad);
    l->mutable_conv()->set_init(proto::HE);
  }
  void relu(const std::string& name) {
    auto* l = m.add_layer();
    l->set_name(name);
    l->mutable_relu();
  }
  void pool(const std::string& name) {
    auto* l = m.add_layer();
    l->set_name(name);
    l->mutable_max_pool()->set_kernel(2);
    l->mutable_max_pool()->set_stride(2);
  }
  void affine(const std::string& name, int out) {
    auto* l = m.add_layer();
    l->set_name(name);
    l->mutable_affine()->set_out_features(out);
    l->mutable_affine()->set_init(proto::HE);
  }
  void dropout(const std::string& name, float ratio, proto::DropoutParam::Mode mode) {
    auto* l = m.add_layer();
    l->set_name(name);
    l->mutable_dropout()->set_ratio(ratio);
    l->mutable_dropout()->set_mode(mode);
  }
};

// The book's DeepConvNet (ch. 8). Parameterised layers are numbered 1..8 like the book's W1..W8.
proto::ModelConfig deep_convnet(int num_classes, proto::DropoutParam::Mode dropout) {
  Builder b;
  b.conv("conv1", 16, 3, 1); b.relu("relu1");
  b.conv("conv2", 16, 3, 1); b.relu("relu2");
  b.pool("pool1");
  b.conv("conv3", 32, 3, 1); b.relu("relu3");
  b.conv("conv4", 32, 3, 2); b.relu("relu4");  // pad 2, as in the book
  b.pool("pool2");
  b.conv("conv5", 64, 3, 1); b.relu("relu5");
  b.conv("conv6", 64, 3, 1); b.relu("relu6");
  b.pool("pool3");
  b.affine("fc7", 50); b.relu("relu7");
  b.dropout("drop7", 0.5f, dropout);
  b.affine("fc8", num_classes);
  b.dropout("drop8", 0.5f, dropout);
  return b.m;
}

// The book's SimpleConvNet (ch. 7): conv 30x5x5, relu, pool, affine 100, relu, affine.
proto::ModelConfig simple_convnet(int num_classes) {
  Builder b;
  b.conv("conv1", 30, 5, 0); b.relu("relu1");
  b.pool("pool1");
  b.affine("fc2", 100); b.relu("relu2");
  b.affine("fc3", num_classes);
  return b.m;
}

}  // namespace

proto::ModelConfig expand_model(const proto::ModelConfig& model) {
  if (model.preset().empty()) {
    if (model.layer_size() == 0) fail_input("model: give a preset or a list of layers");
    return model;
  }
  if (model.layer_size() > 0) fail_input("model: give either preset or layers, not both");
  const int classes = model.num_classes();
  proto::ModelConfig out;
  if (model.preset() == "deep_convnet") out = deep_convnet(classes, proto::DropoutParam::INVERTED);
  else if (model.preset() == "deep_convnet_book") out = deep_convnet(classes, proto::DropoutParam::BOOK);
  else if (model.preset() == "simple_convnet") out = simple_convnet(classes);
  else fail_input("model.preset: unknown '{}' (known: deep_convnet, deep_convnet_book, simple_convnet)",
                  model.preset());
  out.set_preset(model.preset());
  *out.mutable_input() = model.input();
  out.set_num_classes(classes);
  return out;
}

}  // namespace deeptrain
