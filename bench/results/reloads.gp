set terminal pngcairo size 1400,900 font ",10"
set output 'reloads.png'
set multiplot layout 2,2 title "Node hello server, 2 workers, 32 clients, 10 reloads (dashed: each reload begins)"
set xlabel 'seconds'
set ylabel 'ok per 100 ms'
set y2label 'failed per 100 ms'
set y2range [0:*]
set yrange [0:*]
set ytics nomirror
set y2tics
set key top left
unset arrow
set arrow from 0.52, graph 0 to 0.52, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 0.88, graph 0 to 0.88, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.49, graph 0 to 1.49, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.94, graph 0 to 1.94, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.47, graph 0 to 2.47, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.07, graph 0 to 3.07, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.59, graph 0 to 3.59, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.06, graph 0 to 4.06, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.56, graph 0 to 4.56, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.14, graph 0 to 5.14, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "baton shared, keep-alive: 0 failed of 85260"
plot 'timeline.dat' index 0 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 0 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 0.52, graph 0 to 0.52, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.85, graph 0 to 1.85, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.24, graph 0 to 3.24, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.84, graph 0 to 4.84, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.19, graph 0 to 6.19, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 7.79, graph 0 to 7.79, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 9.16, graph 0 to 9.16, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 10.97, graph 0 to 10.97, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 12.45, graph 0 to 12.45, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 13.81, graph 0 to 13.81, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "pm2 cluster, keep-alive: 0 failed of 312227"
plot 'timeline.dat' index 1 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 1 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 0.58, graph 0 to 0.58, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.08, graph 0 to 1.08, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.72, graph 0 to 1.72, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.33, graph 0 to 2.33, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.86, graph 0 to 2.86, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.33, graph 0 to 3.33, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.00, graph 0 to 4.00, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.63, graph 0 to 4.63, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.24, graph 0 to 5.24, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.78, graph 0 to 5.78, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "baton shared, per-request: 0 failed of 23485"
plot 'timeline.dat' index 2 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 2 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 0.73, graph 0 to 0.73, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.16, graph 0 to 2.16, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.00, graph 0 to 4.00, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.48, graph 0 to 5.48, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.71, graph 0 to 6.71, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 7.80, graph 0 to 7.80, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 8.98, graph 0 to 8.98, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 10.30, graph 0 to 10.30, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 12.09, graph 0 to 12.09, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 13.83, graph 0 to 13.83, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "pm2 cluster, per-request: 12 failed of 26359"
plot 'timeline.dat' index 3 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 3 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset multiplot
