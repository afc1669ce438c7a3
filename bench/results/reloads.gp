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
set arrow from 0.51, graph 0 to 0.51, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 0.70, graph 0 to 0.70, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 0.95, graph 0 to 0.95, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.13, graph 0 to 1.13, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.34, graph 0 to 1.34, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.61, graph 0 to 1.61, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.82, graph 0 to 1.82, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.00, graph 0 to 2.00, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.21, graph 0 to 2.21, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.45, graph 0 to 2.45, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "baton shared, keep-alive: 0 failed of 138555"
plot 'timeline.dat' index 0 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 0 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 0.51, graph 0 to 0.51, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.26, graph 0 to 1.26, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.22, graph 0 to 2.22, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.16, graph 0 to 3.16, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.01, graph 0 to 4.01, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.13, graph 0 to 5.13, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.07, graph 0 to 6.07, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.84, graph 0 to 6.84, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 7.67, graph 0 to 7.67, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 8.44, graph 0 to 8.44, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "pm2 cluster, keep-alive: 0 failed of 291251"
plot 'timeline.dat' index 1 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 1 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 0.54, graph 0 to 0.54, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 0.78, graph 0 to 0.78, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.03, graph 0 to 1.03, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.28, graph 0 to 1.28, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.56, graph 0 to 1.56, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.77, graph 0 to 1.77, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.00, graph 0 to 2.00, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.29, graph 0 to 2.29, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.53, graph 0 to 2.53, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.77, graph 0 to 2.77, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "baton shared, per-request: 0 failed of 40164"
plot 'timeline.dat' index 2 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 2 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 0.68, graph 0 to 0.68, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.60, graph 0 to 1.60, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.30, graph 0 to 2.30, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.10, graph 0 to 3.10, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.85, graph 0 to 3.85, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.72, graph 0 to 4.72, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.42, graph 0 to 5.42, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.23, graph 0 to 6.23, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 7.12, graph 0 to 7.12, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 7.82, graph 0 to 7.82, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "pm2 cluster, per-request: 15 failed of 25370"
plot 'timeline.dat' index 3 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 3 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset multiplot
