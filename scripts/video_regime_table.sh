#!/usr/bin/env bash
# The synthetic video table in the papers' regime (issue 18; README "Synthetic video benchmark"): for each
# seed, the two-frame source-only model, then TPS and UDASS video on the reference schedule with that model as
# the frozen teacher of the first 10 % of the run (uda/teacher=switch, udass.md §2.5c), TPS from step 0, and
# (ours) L_TPS on confident pseudo-labels only (uda.pseudo.threshold=0.968, DAFormer's τ).
#
#   bash scripts/video_regime_table.sh [STEPS] [SEEDS] [DATA]
#   e.g. JOBS=2 bash scripts/video_regime_table.sh 1500 0,1,2 synthetic_video_sensor_gap
#
# STEPS: trainer.max_steps of every row (default 1500, the image regime's); SEEDS: comma-separated (default
# 0,1,2); DATA: the clips' data config (default synthetic_video_sensor_gap, the image regime's gap).
# Environment: JOBS=K runs K trainings at a time (default 2, one thread each), the source-only runs first
# (their checkpoints are the adapted rows' teachers), then the adapted rows; ROWS="tps udass" picks the
# adapted rows (add "tps_ref udass_ref" for the reference without the threshold; "tps_hist" for the TPS row
# with the reference's source histogram matching and 0.8-1.2 rescale, "tps_full" with them and TPS's own strong
# view, "udass_full" the UDASS video row with the matching and the view; "tps_fb" / "udass_fb" the TPS / UDASS
# video row with L_TPS masked where the warp fails the forward-backward flow test (ours); "tps_permuted" for the
# negative control: the TPS row on pseudo-labels shifted by one class, "udass_permuted" the same on the
# UDASS video row; "tps_l01" for the TPS row with the VIPER configs' λ_T 0.1 (tps_viper2city.yml; the
# experiment's default since it was chosen on the dev clips; the other TPS rows keep SYNTHIA-Seq's 1.0, with
# which they were measured), "tps_ref_l01" the reference without the threshold at 0.1; "tps_ema" for the TPS
# row with a mean teacher of the student after the switch;
# "udass_nomix" / "udass_nommd" for the UDASS video row without video QuadMix / without the MMD; "mic" for
# image MIC on the clips' current frames, from the stand-in with its own EMA teacher as the image rows);
# SKIP_SOURCE=1 reuses the source-only runs already there; EXTRA="key=value ..." appends overrides.
# Runs land in logs/video_regime/<DATA>_<STEPS>/<row>/seed<S>; the table:
#   python scripts/aggregate_results.py logs/video_regime/<DATA>_<STEPS> --per-class
set -euo pipefail
steps=${1:-1500} seeds=${2:-0,1,2} data=${3:-synthetic_video_sensor_gap}
cd "$(dirname "$0")/.."
if [ ! -f "conf/data/$data.yaml" ]; then
  echo "video_regime_table.sh: no conf/data/$data.yaml: name a data config (e.g. synthetic_video)" >&2
  exit 2
fi
py=${PYTHON:-.venv/bin/python}
logs=logs/video_regime/${data}_$steps
read -r -a extra <<< "${EXTRA:-}"
run() {  # run ROW EXPERIMENT SEED OVERRIDES...: one training as one shell line
  local row=$1 exp=$2 seed=$3
  shift 3
  printf 'OMP_NUM_THREADS=1 %q -m src.train experiment=%q data=%q trainer.max_steps=%q seed=%q' \
    "$py" "$exp" "$data" "$steps" "$seed"
  printf ' %q' "$@" callbacks.progress=null trainer.enable_progress_bar=false "${extra[@]}" \
    "hydra.run.dir=$logs/$row/seed$seed"
  printf '\n'
}
sources=$(mktemp) adapted=$(mktemp)
for seed in ${seeds//,/ }; do
  run source_only source_only_synthetic_video "$seed"
done > "$sources"
for seed in ${seeds//,/ }; do
  ref=(uda/teacher=switch uda.teacher.switch_step=0.1
    "uda.teacher.checkpoint=$logs/source_only/seed$seed/checkpoints/last.ckpt")
  thr=("${ref[@]}" uda.pseudo.threshold=0.968)  # ours: L_TPS on confident pseudo-labels (DAFormer's tau)
  shifted=uda.pseudo._target_=tests.controls.PermutedTemporalPseudoLabels  # the negative control's labeller
  # the references' own TPS ingredients (video_uda.md §3.3 steps 1, 3): source frames histogram-matched to the
  # current target frame, the student pair rescaled by 0.8-1.2, TPS's strong view (src/uda/video/tps_augment.py)
  hist=(uda.source_histogram_match=true) rescale=("uda.pseudo.rescale=[0.8,1.2]") view=(uda/augment@uda.pseudo.augment=tps)
  fb=(uda.pseudo.consistency=true)  # ours: L_TPS only where the warp passes the forward-backward flow test
  # λ_T of the TPS rows: tps_synthetic_video's default is the VIPER configs' 0.1 (chosen on the dev clips, README
  # "Synthetic video benchmark"); the rows measured before with SYNTHIA-Seq's 1.0 (its default until then) keep it
  l1=(uda.lambda_t=1.0)
  for row in ${ROWS:-tps udass}; do  # (each ROWS selection logs its jobs to jobs_<ROWS>)
    case $row in
      tps) run tps_thr0.968 tps_synthetic_video "$seed" "${thr[@]}" "${l1[@]}" uda.name=tps_thr0.968 ;;
      udass) run udass_thr0.968 udass_synthetic_video "$seed" "${thr[@]}" uda.name=udass_video_thr0.968 ;;
      tps_permuted)  # the negative control (tests/controls.py): the same TPS row on shifted pseudo-labels
        run tps_thr0.968@permuted_labels tps_synthetic_video "$seed" "${thr[@]}" "${l1[@]}" "$shifted" \
          uda.name=tps_thr0.968_permuted_labels ;;
      udass_permuted)  # the same control on the UDASS video row (video QuadMix pastes the shifted key labels)
        run udass_thr0.968@permuted_labels udass_synthetic_video "$seed" "${thr[@]}" "$shifted" \
          uda.name=udass_video_thr0.968_permuted_labels ;;
      tps_hist)  # the TPS row with the reference's source histogram matching and 0.8-1.2 rescale
        run tps_thr0.968_hist tps_synthetic_video "$seed" "${thr[@]}" "${l1[@]}" "${hist[@]}" "${rescale[@]}" \
          uda.name=tps_thr0.968_hist ;;
      tps_full)  # tps_hist with TPS's own strong view instead of the library's DACS augmentation
        run tps_thr0.968_full tps_synthetic_video "$seed" "${thr[@]}" "${l1[@]}" "${hist[@]}" "${rescale[@]}" \
          "${view[@]}" uda.name=tps_thr0.968_full ;;
      udass_full)  # the UDASS video row with histogram matching and TPS's view, as the SYNTHIA-Seq scripts
        # (udass.md §2.6.1, §2.6.3; UDASS removed TPS's rescale)
        run udass_thr0.968_full udass_synthetic_video "$seed" "${thr[@]}" "${hist[@]}" "${view[@]}" \
          uda.name=udass_video_thr0.968_full ;;
      tps_fb)  # ours (issue 18 "beyond the references"): the TPS row with L_TPS masked where the warp fails the
        # forward-backward flow test (uda.pseudo.consistency; the forward flows by DIS on the fly, data.flow.forward)
        run tps_thr0.968_fb tps_synthetic_video "$seed" "${thr[@]}" "${l1[@]}" "${fb[@]}" \
          uda.name=tps_thr0.968_fb ;;
      udass_fb)  # the same validity mask on the UDASS video row
        run udass_thr0.968_fb udass_synthetic_video "$seed" "${thr[@]}" "${fb[@]}" \
          uda.name=udass_video_thr0.968_fb ;;
      tps_l01)  # the TPS row with LAMBDA_T 0.1, the TPS VIPER configs' value (video_uda.md §3.3; the default since)
        run tps_thr0.968_l01 tps_synthetic_video "$seed" "${thr[@]}" uda.lambda_t=0.1 uda.name=tps_thr0.968_l01 ;;
      tps_ema)  # ours: TPS + threshold, a mean teacher of the student after the switch (the configs' 2.5 %
        # window of the run, the resolver of conf/experiment/synthetic_uda_base.yaml: 0.9733 at 1500 steps)
        run tps_thr0.968_ema tps_synthetic_video "$seed" "${thr[@]}" "${l1[@]}" uda.teacher.after_switch=ema \
          "uda.teacher.alpha='\${udass.ema_alpha:0.025,\${trainer.max_steps}}'" uda.name=tps_thr0.968_ema ;;
      udass_nomix)  # ablation of UDASS video: without video QuadMix (no L_SS, no L_ST): TPS + MMD
        run udass_thr0.968_nomix udass_synthetic_video "$seed" "${thr[@]}" uda/mix=none \
          uda.name=udass_video_thr0.968_nomix ;;
      udass_nommd)  # ablation of UDASS video: without the prototype MMD: TPS + video QuadMix
        run udass_thr0.968_nommd udass_synthetic_video "$seed" "${thr[@]}" uda.mmd=null \
          uda.name=udass_video_thr0.968_nommd ;;
      mic) run mic mic_synthetic_video "$seed" ;;  # image MIC on the clips' current frames
      tps_ref) run tps_reference tps_synthetic_video "$seed" "${ref[@]}" "${l1[@]}" ;;
      tps_ref_l01)  # the TPS reference as published for VIPER: no threshold, LAMBDA_T 0.1
        run tps_reference_l01 tps_synthetic_video "$seed" "${ref[@]}" uda.lambda_t=0.1 uda.name=tps_reference_l01 ;;
      udass_ref) run udass_reference udass_synthetic_video "$seed" "${ref[@]}" ;;
      *) echo "video_regime_table.sh: unknown row '$row' in ROWS" \
           "(tps, udass, tps_hist, tps_full, udass_full, tps_fb, udass_fb, tps_l01, tps_ref_l01, tps_permuted," \
           "udass_permuted, tps_ema, udass_nomix, udass_nommd, mic, tps_ref, udass_ref)" >&2
         exit 2 ;;
    esac
  done
done > "$adapted"
# two phases: an adapted row reads its seed's source-only checkpoint as the frozen teacher
rows=${ROWS:-tps udass}
[ -n "${SKIP_SOURCE:-}" ] \
  || "$py" scripts/run_parallel.py "$sources" --jobs "${JOBS:-2}" --log-dir "$logs/jobs_source_only"
"$py" scripts/run_parallel.py "$adapted" --jobs "${JOBS:-2}" --log-dir "$logs/jobs_${rows// /_}"
"$py" scripts/aggregate_results.py "$logs" --per-class
