# gnuplot: llamawire beside a baseline, one pair of bars per row. Called as
#   gnuplot -e "data='FILE'; out='PNG'; title='...'; ylabel='...'; baseline='llama.cpp'" bench/plot_bars.gp
# FILE: one row per case, "label" baseline_value llamawire_value (the label quoted).
set terminal pngcairo size 900,520 font "sans,11" noenhanced
set output out
set title title
set ylabel ylabel
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key top left box opaque
set xtics rotate by -20 left
set yrange [0:*]
plot data using 2:xtic(1) title baseline lc rgb "#9ca3af", \
     '' using 3 title "llamawire" lc rgb "#2563eb"
