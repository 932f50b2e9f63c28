#!/usr/bin/env bash
# The gap / schedule study of the synthetic benchmark on the *dev* split (README "Towards the papers' regime").
#
#   bash scripts/dev_gap_study.sh SETTING STEPS EXPERIMENTS [SEEDS]
#   e.g. bash scripts/dev_gap_study.sh tg03 2500 source_only_synthetic,oracle_synthetic,dacs_synthetic
#
# SETTING names a generator setting, rendered with the dev seed 7 (source, target and val all differ from the
# reported data, seed 0) into data/dev_<SETTING>:
#   v3      the default generator (gap 1)
#   tg03    the thing classes' palettes and size at 0.3 of the gap (--thing-gap 0.3)
#   g15     gap 1.5, things at 0.3
#   fx15    textures, camera, lighting, noise and hood at 1.5; the palettes at 1.0, things at 0.3
#   pal15   the stuff palettes at 1.5, the rest at 1.0, things at 0.3
# STEPS sets trainer.max_steps and the mean teacher's alpha = 1 - 1 / (0.025 * STEPS) (the papers' 2.5 %
# window, conf/experiment/synthetic_uda_base.yaml); the lr warm-up is a fraction of the run already.
# Runs land in logs/dev_gap_study/<SETTING>_<STEPS>/<experiment>/<job>; the table of one folder:
#   python scripts/aggregate_results.py logs/dev_gap_study/<SETTING>_<STEPS> --per-class
set -euo pipefail
[ $# -ge 3 ] || { sed -n 2,19p "$0"; exit 2; }
setting=$1 steps=$2 experiments=$3 seeds=${4:-0}
case $setting in
  v3) flags=() ;;
  tg03) flags=(--thing-gap 0.3) ;;
  g15) flags=(--gap 1.5 --thing-gap 0.3) ;;
  fx15) flags=(--gap 1.5 --thing-gap 0.3 --palette-gap 1.0) ;;
  pal15) flags=(--thing-gap 0.3 --palette-gap 1.5) ;;
  *) echo "dev_gap_study.sh: unknown SETTING '$setting' (v3, tg03, g15, fx15, pal15)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
root=data/dev_$setting
"$py" scripts/make_synthetic.py "$root" --seed 7 "${flags[@]}" --workers 2
# the same generator keys for the training's data.prepare (otherwise it would re-render the folder)
prepare=(data.prepare.seed=7)
for ((i = 0; i < ${#flags[@]}; i += 2)); do
  key=${flags[i]#--}
  prepare+=("+data.prepare.${key//-/_}=${flags[i + 1]}")
done
alpha=$("$py" -c "print(max(0.0, round(1 - 1 / (0.025 * $steps), 4)))")
for exp in ${experiments//,/ }; do
  teacher=()  # the rows without a teacher (source only, oracle) have no alpha to set
  case $exp in source_only*|oracle*) ;; *) teacher=("uda.teacher.alpha=$alpha") ;; esac
  "$py" -m src.train -m "experiment=$exp" "seed=$seeds" "data.root=$PWD/$root" "${prepare[@]}" \
    "trainer.max_steps=$steps" "trainer.val_check_interval=$steps" "${teacher[@]}" \
    "hydra.sweep.dir=logs/dev_gap_study/${setting}_$steps/$exp" \
    callbacks.progress=null trainer.enable_progress_bar=false
done
