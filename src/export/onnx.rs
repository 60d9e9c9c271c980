//! A small ONNX graph builder over tract's prost types: named inputs and outputs, f32/i64
//! initializers and nodes with generated unique value names.

use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

/// ONNX IR version written (ONNX 1.13+ readers).
pub const IR_VERSION: i64 = 8;
/// Default-domain opset written (17: first with LayerNormalization).
pub const OPSET: i64 = 17;

pub use tract_onnx::pb::tensor_proto::DataType;

/// One dimension of a graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A symbolic size, named.
    Symbol(String),
}

/// An attribute value for [`GraphBuilder::node`].
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    /// A single integer.
    Int(i64),
    /// A list of integers.
    Ints(Vec<i64>),
    /// A single float.
    Float(f32),
    /// A UTF-8 string.
    Str(String),
}

impl Attr {
    fn proto(&self, name: &str) -> AttributeProto {
        let mut a = AttributeProto {
            name: name.to_string(),
            ..Default::default()
        };
        match self {
            Attr::Int(v) => {
                a.r#type = AttributeType::Int as i32;
                a.i = *v;
            }
            Attr::Ints(v) => {
                a.r#type = AttributeType::Ints as i32;
                a.ints = v.clone();
            }
            Attr::Float(v) => {
                a.r#type = AttributeType::Float as i32;
                a.f = *v;
            }
            Attr::Str(v) => {
                a.r#type = AttributeType::String as i32;
                a.s = v.as_bytes().to_vec();
            }
        }
        a
    }
}

fn value_info(name: &str, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(n) => tensor_shape_proto::dimension::Value::DimValue(*n as i64),
                Dim::Symbol(s) => tensor_shape_proto::dimension::Value::DimParam(s.clone()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Accumulates one graph's nodes, initializers, inputs and outputs.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    counter: usize,
}

impl GraphBuilder {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh value name derived from `hint` (ONNX needs every value name to be unique).
    pub fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// Declares an f32 graph input.
    pub fn input(&mut self, name: &str, dims: &[Dim]) -> String {
        self.inputs.push(value_info(name, dims));
        name.to_string()
    }

    /// Declares an f32 graph output (a value some node already produces under `name`).
    pub fn output(&mut self, name: &str, dims: &[Dim]) {
        self.outputs.push(value_info(name, dims));
    }

    /// Adds an f32 initializer (little-endian raw data) and returns its name.
    pub fn constant_f32(&mut self, hint: &str, dims: &[usize], data: &[f32]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len());
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// Adds an initializer of any element type from its little-endian bytes.
    pub fn constant_raw(
        &mut self,
        hint: &str,
        dims: &[usize],
        data_type: DataType,
        raw_data: Vec<u8>,
    ) -> String {
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type as i32,
            raw_data,
            ..Default::default()
        });
        name
    }

    /// Adds a u8 initializer (quantized activations' zero points).
    pub fn constant_u8(&mut self, hint: &str, dims: &[usize], data: &[u8]) -> String {
        self.constant_raw(hint, dims, DataType::Uint8, data.to_vec())
    }

    /// Adds an i8 initializer (quantized weights and their zero points).
    pub fn constant_i8(&mut self, hint: &str, dims: &[usize], data: &[i8]) -> String {
        let raw = data.iter().map(|&v| v as u8).collect();
        self.constant_raw(hint, dims, DataType::Int8, raw)
    }

    /// Adds an i32 initializer (quantized biases).
    pub fn constant_i32(&mut self, hint: &str, dims: &[usize], data: &[i32]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.constant_raw(hint, dims, DataType::Int32, raw)
    }

    /// Declares an f32 graph output of unspecified shape (intermediate values exposed for
    /// calibration).
    pub fn output_any_shape(&mut self, name: &str) {
        let mut v = value_info(name, &[]);
        if let Some(type_proto::Value::TensorType(t)) =
            v.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            t.shape = None;
        }
        self.outputs.push(v);
    }

    /// Adds a 1-D i64 initializer (shapes, axes) and returns its name.
    pub fn constant_i64(&mut self, hint: &str, data: &[i64]) -> String {
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: vec![data.len() as i64],
            data_type: DataType::Int64 as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// Adds a node with one output of a generated name, which it returns.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node_named(op, inputs, &out, attrs);
        out
    }

    /// Adds a node whose single output has the given name (for graph outputs).
    pub fn node_named(&mut self, op: &str, inputs: &[&str], output: &str, attrs: &[(&str, Attr)]) {
        let name = self.fresh(&format!("n_{}", op.to_lowercase()));
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name,
            op_type: op.to_string(),
            attribute: attrs.iter().map(|(n, a)| a.proto(n)).collect(),
            ..Default::default()
        });
    }

    /// The finished model (IR 8, opset 17), named `name`.
    pub fn finish(self, name: &str, doc: &str) -> ModelProto {
        ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "thermal-edge".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc.into(),
            graph: Some(GraphProto {
                node: self.nodes,
                name: name.into(),
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}
