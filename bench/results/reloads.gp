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
set arrow from 0.99, graph 0 to 0.99, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.63, graph 0 to 1.63, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.37, graph 0 to 2.37, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.99, graph 0 to 2.99, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.72, graph 0 to 3.72, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.40, graph 0 to 4.40, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.07, graph 0 to 5.07, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.83, graph 0 to 5.83, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.49, graph 0 to 6.49, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "baton shared, keep-alive: 0 failed of 77126"
plot 'timeline.dat' index 0 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 0 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 0.55, graph 0 to 0.55, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.70, graph 0 to 3.70, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.89, graph 0 to 5.89, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 7.52, graph 0 to 7.52, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 10.00, graph 0 to 10.00, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 12.03, graph 0 to 12.03, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 14.17, graph 0 to 14.17, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 15.76, graph 0 to 15.76, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 17.58, graph 0 to 17.58, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 19.23, graph 0 to 19.23, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "pm2 cluster, keep-alive: 0 failed of 260547"
plot 'timeline.dat' index 1 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 1 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 0.62, graph 0 to 0.62, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.41, graph 0 to 1.41, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.36, graph 0 to 2.36, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.24, graph 0 to 3.24, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.22, graph 0 to 4.22, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.01, graph 0 to 5.01, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.75, graph 0 to 5.75, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.47, graph 0 to 6.47, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 7.34, graph 0 to 7.34, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 8.21, graph 0 to 8.21, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "baton shared, per-request: 0 failed of 26206"
plot 'timeline.dat' index 2 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 2 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 0.74, graph 0 to 0.74, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.26, graph 0 to 2.26, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.98, graph 0 to 3.98, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.70, graph 0 to 5.70, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 7.24, graph 0 to 7.24, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 9.04, graph 0 to 9.04, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 10.75, graph 0 to 10.75, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 12.34, graph 0 to 12.34, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 14.02, graph 0 to 14.02, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 15.54, graph 0 to 15.54, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "pm2 cluster, per-request: 13 failed of 25239"
plot 'timeline.dat' index 3 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 3 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset multiplot
