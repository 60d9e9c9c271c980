use candle_core::{Device, Tensor};
use std::time::Instant;
use thermal_edge::model::train::loss;
use thermal_edge::model::{Mnad, ModelConfig, ParamStore};
fn main() {
    let cfg = ModelConfig::preset(&std::env::args().nth(1).unwrap_or("edge-s".into())).unwrap();
    let store = ParamStore::new(Device::Cpu, 1);
    let net = Mnad::new(&store, &cfg).unwrap();
    let x = Tensor::randn(0f32, 1., (4, 4, cfg.height, cfg.width), &Device::Cpu).unwrap();
    let y = Tensor::randn(0f32, 1., (4, 1, cfg.height, cfg.width), &Device::Cpu)
        .unwrap()
        .tanh()
        .unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        let f = net.forward(&x, true).unwrap();
        let t1 = t.elapsed();
        let (tot, _) = loss(&net, &f, &y).unwrap();
        let t2 = t.elapsed();
        let g = tot.backward().unwrap();
        let t3 = t.elapsed();
        net.memory.update(&f.queries, &f.read.scores).unwrap();
        let t4 = t.elapsed();
        let fe = net.forward(&x, false).unwrap();
        let _ = fe.pred.sum_all().unwrap().to_scalar::<f32>();
        let t5 = t.elapsed();
        drop(g);
        println!(
            "fwd {:?} loss {:?} bwd {:?} memupd {:?} eval-fwd {:?}",
            t1,
            t2 - t1,
            t3 - t2,
            t4 - t3,
            t5 - t4
        );
    }
}
