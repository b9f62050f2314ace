// `deeptrain plot RUN_DIR`: the learning curves of a run (the book's figures: accuracy and
// loss against epoch), as curves.png and curves.svg in the run directory. `train` draws them
// after every epoch too; this redraws them, at another size, or for a run still in progress.
#include <memory>

#include "app/commands.h"
#include "report/learning_curves.h"

namespace deeptrain::app {
namespace {

struct PlotOptions {
  std::string run_dir;
  int width = report::kCurvesWidth, height = report::kCurvesHeight;
};

void run_plot(const PlotOptions& o) {
  for (const std::string& path : report::plot_run_dir(o.run_dir, o.width, o.height))
    std::printf("wrote %s\n", path.c_str());
}

}  // namespace

void add_plot_command(CLI::App& cli) {
  auto o = std::make_shared<PlotOptions>();
  CLI::App* sub = cli.add_subcommand(
      "plot", "draw a run's learning curves (accuracy, loss and learning rate against epoch) as "
              "curves.png and curves.svg in its run directory");
  sub->add_option("run_dir", o->run_dir, "a run directory written by `deeptrain train`")
      ->required();
  sub->add_option("--width", o->width, "image width in pixels")->capture_default_str();
  sub->add_option("--height", o->height, "image height in pixels")->capture_default_str();
  sub->footer(
      "Examples:\n"
      "  deeptrain plot runs/deep_convnet_mnist-20240501-120000\n"
      "  deeptrain plot runs/try1 --width 800 --height 320");
  sub->callback([o] { run_plot(*o); });
}

}  // namespace deeptrain::app
